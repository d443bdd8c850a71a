#[derive(clap::Args)]
pub struct SimArgs {}
pub fn run(_a: SimArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err("not yet".into())
}
