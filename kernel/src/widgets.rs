//! Notebook widgets over the ipywidgets comm protocol 2.1 (spec/jupyter.md §9–§10): every live
//! result is an anywidget `AnyModel` running our bundled ES module (`widgets/dist`), so the
//! Jupyter server needs only `pip install anywidget`. This module owns the models (state and
//! binary buffers), the `jupyter.widget.control` restore path, and routing of front-end custom
//! messages to whoever opened the model.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::lock::lock;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::publisher::Publisher;
use crate::transport::Message;

/// The front end, built by `widgets/` (committed, so building the kernel needs no Node).
pub const WIDGET_JS: &str = include_str!("../../widgets/dist/beamtime-widget.js");

const WIDGET_PROTOCOL: &str = "2.1.0";
const CONTROL_PROTOCOL: &str = "1.0.0";
pub const WIDGET_TARGET: &str = "jupyter.widget";
pub const CONTROL_TARGET: &str = "jupyter.widget.control";

/// The anywidget versions our state asks for. The `AnyModel` contract has been stable across
/// 0.9–0.11, so the default range is wide; `BEAMTIME_ANYWIDGET_VERSION` overrides it.
pub fn anywidget_range() -> String {
    std::env::var("BEAMTIME_ANYWIDGET_VERSION").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| ">=0.9.0 <1.0.0".into())
}

thread_local! {
    /// The front-end message a custom-message handler is answering (on the shell thread).
    static HANDLING: std::cell::RefCell<Option<Message>> = const { std::cell::RefCell::new(None) };
}

/// Called with the content of each custom message the front end sends to a model.
pub type OnCustom = Arc<dyn Fn(&Value) + Send + Sync>;

struct Model {
    /// JSON traits (binary ones are in `buffers`).
    state: Map<String, Value>,
    buffers: BTreeMap<String, Bytes>,
    on_custom: Option<OnCustom>,
}

impl Model {
    /// The whole state with its buffer paths and buffers, for `update` and `update_states`.
    fn full(&self) -> (Value, Vec<Vec<String>>, Vec<Bytes>) {
        let paths = self.buffers.keys().map(|k| vec![k.clone()]).collect();
        (Value::Object(self.state.clone()), paths, self.buffers.values().cloned().collect())
    }
}

/// The kernel's widget models and open control comms.
pub struct Widgets {
    publisher: Publisher,
    models: Mutex<BTreeMap<String, Model>>,
    controls: Mutex<BTreeSet<String>>,
    /// The execute request running now (or the last one): like ipykernel, messages from
    /// background updates are parented to it, so nbclient records them with that cell.
    current: Mutex<Option<Message>>,
}

impl Widgets {
    pub fn new(publisher: Publisher) -> Self {
        Widgets { publisher, models: Mutex::default(), controls: Mutex::default(), current: Mutex::default() }
    }

    pub fn set_current(&self, parent: &Message) {
        *lock(&self.current) = Some(parent.clone());
    }

    /// The parent for messages sent now: the front-end message being handled on this thread
    /// (replies to it), else the execute request running now (or the last one).
    pub fn current(&self) -> Option<Message> {
        HANDLING.with(|h| h.borrow().clone()).or_else(|| lock(&self.current).clone())
    }

    fn send(&self, parent: Option<&Message>, msg_type: &str, content: Value, version: &str, buffers: Vec<Bytes>) {
        let mut m = Message::new(&self.publisher.session, msg_type, content);
        m.parent_header = parent.map(|p| p.header.clone());
        m.metadata = json!({ "version": version });
        m.buffers = buffers;
        self.publisher.publish_message(m);
    }

    /// Opens a beamtime widget (an anywidget model running our module) with `traits` and binary
    /// traits `binary`; returns its model id. Front-end custom messages go to `on_custom`.
    pub fn open(&self, parent: &Message, traits: Map<String, Value>, binary: Vec<(String, Bytes)>, on_custom: Option<OnCustom>) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let range = anywidget_range();
        let mut state = Map::new();
        for (k, v) in [
            ("_model_module", json!("anywidget")),
            ("_model_module_version", json!(range)),
            ("_model_name", json!("AnyModel")),
            ("_view_module", json!("anywidget")),
            ("_view_module_version", json!(range)),
            ("_view_name", json!("AnyView")),
            ("_view_count", Value::Null),
            ("_esm", json!(WIDGET_JS)),
            ("_css", json!("")),
            ("_anywidget_id", json!("beamtime.LiveView")),
        ] {
            state.insert(k.into(), v);
        }
        state.extend(traits);
        let model = Model { state, buffers: binary.into_iter().collect(), on_custom };
        let (state, paths, buffers) = model.full();
        lock(&self.models).insert(id.clone(), model);
        self.send(
            Some(parent),
            "comm_open",
            json!({"comm_id": id, "target_name": WIDGET_TARGET, "data": {"state": state, "buffer_paths": paths}}),
            WIDGET_PROTOCOL,
            buffers,
        );
        id
    }

    /// Changes some traits (JSON and binary) and sends them to the front end.
    pub fn update(&self, id: &str, changes: Map<String, Value>, binary: Vec<(String, Bytes)>) {
        let buffers: Vec<Bytes> = {
            let mut models = lock(&self.models);
            let Some(m) = models.get_mut(id) else { return };
            for (k, v) in &changes {
                m.state.insert(k.clone(), v.clone());
            }
            for (k, b) in &binary {
                m.buffers.insert(k.clone(), b.clone());
            }
            binary.iter().map(|(_, b)| b.clone()).collect()
        };
        let paths: Vec<Vec<String>> = binary.iter().map(|(k, _)| vec![k.clone()]).collect();
        let parent = self.current();
        self.send(
            parent.as_ref(),
            "comm_msg",
            json!({"comm_id": id, "data": {"method": "update", "state": changes, "buffer_paths": paths}}),
            WIDGET_PROTOCOL,
            buffers,
        );
    }

    /// Sends a custom message (not stored in the state) to the model's views.
    pub fn custom(&self, id: &str, content: Value, buffers: Vec<Bytes>) {
        if !lock(&self.models).contains_key(id) {
            return;
        }
        let parent = self.current();
        self.send(parent.as_ref(), "comm_msg", json!({"comm_id": id, "data": {"method": "custom", "content": content}}), WIDGET_PROTOCOL, buffers);
    }

    /// Closes a model (its views disappear).
    pub fn close(&self, id: &str) {
        if lock(&self.models).remove(id).is_some() {
            let parent = self.current();
            self.send(parent.as_ref(), "comm_close", json!({"comm_id": id, "data": {}}), WIDGET_PROTOCOL, Vec::new());
        }
    }

    /// The mime bundle entry that displays model `id`.
    pub fn view(id: &str) -> Value {
        json!({"version_major": 2, "version_minor": 1, "model_id": id})
    }

    /// comm_info listing: our models and open control comms, for `target` (or all).
    pub fn comm_info(&self, target: Option<&str>) -> Map<String, Value> {
        let mut out = Map::new();
        if target.is_none_or(|t| t == WIDGET_TARGET) {
            for id in lock(&self.models).keys() {
                out.insert(id.clone(), json!({"target_name": WIDGET_TARGET}));
            }
        }
        if target.is_none_or(|t| t == CONTROL_TARGET) {
            for id in lock(&self.controls).iter() {
                out.insert(id.clone(), json!({"target_name": CONTROL_TARGET}));
            }
        }
        out
    }

    /// Handles a front-end comm message (comm_open, comm_msg, comm_close); false when it is not
    /// ours (the caller closes unknown comms).
    pub fn handle(&self, m: &Message) -> bool {
        let c = &m.content;
        let id = c.get("comm_id").and_then(Value::as_str).unwrap_or_default().to_string();
        let data = c.get("data").cloned().unwrap_or(Value::Null);
        match m.msg_type() {
            "comm_open" => match c.get("target_name").and_then(Value::as_str) {
                Some(CONTROL_TARGET) => {
                    lock(&self.controls).insert(id);
                    true
                }
                _ => false,
            },
            "comm_close" => {
                let ours = lock(&self.controls).remove(&id);
                ours || lock(&self.models).remove(&id).is_some()
            }
            "comm_msg" => {
                if lock(&self.controls).contains(&id) {
                    if data.get("method").and_then(Value::as_str) == Some("request_states") {
                        self.update_states(m, &id);
                    }
                    return true;
                }
                self.model_message(m, &id, &data)
            }
            _ => false,
        }
    }

    /// Every model's full state on the control comm (restore after a page reload, §9.3).
    fn update_states(&self, request: &Message, control: &str) {
        let mut states = Map::new();
        let mut paths: Vec<Vec<String>> = Vec::new();
        let mut buffers = Vec::new();
        for (id, model) in lock(&self.models).iter() {
            let (state, p, b) = model.full();
            let s = |k: &str| model.state.get(k).cloned().unwrap_or(Value::Null);
            states.insert(
                id.clone(),
                json!({"model_name": s("_model_name"), "model_module": s("_model_module"),
                       "model_module_version": s("_model_module_version"), "state": state}),
            );
            paths.extend(p.into_iter().map(|mut path| {
                path.splice(0..0, [id.clone(), "state".to_string()]);
                path
            }));
            buffers.extend(b);
        }
        self.send(
            Some(request),
            "comm_msg",
            json!({"comm_id": control, "data": {"method": "update_states", "states": states, "buffer_paths": paths}}),
            CONTROL_PROTOCOL,
            buffers,
        );
    }

    fn model_message(&self, m: &Message, id: &str, data: &Value) -> bool {
        let method = data.get("method").and_then(Value::as_str).unwrap_or_default();
        let mut models = lock(&self.models);
        let Some(model) = models.get_mut(id) else { return false };
        match method {
            "request_state" => {
                let (state, paths, buffers) = model.full();
                drop(models);
                self.send(
                    Some(m),
                    "comm_msg",
                    json!({"comm_id": id, "data": {"method": "update", "state": state, "buffer_paths": paths}}),
                    WIDGET_PROTOCOL,
                    buffers,
                );
            }
            "update" => {
                // A view changed traits (e.g. its view choice): keep them, and echo them so that
                // other views of the model agree (2.1 echo_update).
                let state = data.get("state").cloned().unwrap_or_else(|| json!({}));
                let paths = data.get("buffer_paths").cloned().unwrap_or_else(|| json!([]));
                if let Value::Object(s) = &state {
                    for (k, v) in s {
                        model.state.insert(k.clone(), v.clone());
                    }
                }
                for (path, buf) in paths.as_array().into_iter().flatten().zip(&m.buffers) {
                    if let Some(k) = path.get(0).and_then(Value::as_str) {
                        model.buffers.insert(k.to_string(), buf.clone());
                        model.state.remove(k);
                    }
                }
                drop(models);
                self.send(
                    Some(m),
                    "comm_msg",
                    json!({"comm_id": id, "data": {"method": "echo_update", "state": state, "buffer_paths": paths}}),
                    WIDGET_PROTOCOL,
                    m.buffers.clone(),
                );
            }
            "custom" => {
                let handler = model.on_custom.clone();
                drop(models);
                if let Some(h) = handler {
                    HANDLING.with(|c| *c.borrow_mut() = Some(m.clone()));
                    h(data.get("content").unwrap_or(&Value::Null));
                    HANDLING.with(|c| *c.borrow_mut() = None);
                }
            }
            _ => {}
        }
        true
    }
}
