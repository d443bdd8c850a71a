"""The community conformance suite (jupyter_kernel_test) against the installed kernelspec."""
import pathlib
import unittest

import jupyter_kernel_test

from conftest import SHARED

SAMPLE = SHARED / "data/xtc2/mixed_rate"


class BeamtimeKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = "beamtime"
    language_name = "rust"
    file_extension = ".rs"

    code_hello_world = 'println!("hello, world");'
    code_stderr = 'eprintln!("hello, stderr");'

    completion_samples = [
        {"text": "%tab", "matches": {"%tables"}},
        {"text": "%%sq", "matches": {"%%sql"}},
    ]
    complete_code_samples = ["%tables", "let x = 1;", "%%sql\nSELECT 1"]
    incomplete_code_samples = ["fn f() {", "%%sql\nSELECT (1"]
    invalid_code_samples = ["}"]

    code_page_something = None
    code_inspect_sample = "%load"

    code_generate_error = "%no_such_magic"

    code_execute_result = [{"code": "1 + 2", "result": "3"}]

    # %load shows the loaded table as display data (HTML and text).
    code_display_data = [
        {"code": f"%load run events exp=xpptut15:run=14:dir={SAMPLE}", "mime": "text/html"},
    ]

    supported_history_operations = ("tail", "search")
    code_history_pattern = "1 + *"

    @classmethod
    def setUpClass(cls):
        # The first Rust cell starts evcxr and compiles for seconds (minutes on a cold machine);
        # jupyter_kernel_test allows 15 s per cell, so warm up first (spec §12.1).
        super().setUpClass()
        reply = cls.kc.execute_interactive("let _warm = 1;", timeout=900)
        assert reply["content"]["status"] == "ok", reply["content"]


if __name__ == "__main__":
    unittest.main()
