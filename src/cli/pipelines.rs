//! `keyscribe pipelines list|show NAME`: the built-in pipelines.

use clap::{Args, Subcommand};

use keyscribe::pipeline::{built_in_pipeline, built_in_pipelines};

use super::io::write_stdout;

/// Arguments of `keyscribe pipelines`.
#[derive(Debug, Args)]
pub struct PipelinesArgs {
    #[command(subcommand)]
    action: PipelinesAction,
}

#[derive(Debug, Subcommand)]
enum PipelinesAction {
    /// List the built-in pipelines, each with what it is for.
    List {
        /// Print the list as JSON on stdout: [{"name", "description"}].
        #[arg(long)]
        json: bool,
    },
    /// Print a built-in pipeline's TOML (a starting point for a pipeline file of your own).
    Show {
        /// The pipeline's name (see `keyscribe pipelines list`).
        name: String,
    },
}

/// Runs a `pipelines` action.
pub fn run(args: PipelinesArgs) -> anyhow::Result<()> {
    match args.action {
        PipelinesAction::List { json: true } => {
            let rows: Vec<serde_json::Value> = built_in_pipelines()
                .map(|pipeline| {
                    serde_json::json!({
                        "name": pipeline.name,
                        "description": pipeline.description(),
                    })
                })
                .collect();
            write_stdout(format!("{}\n", serde_json::to_string_pretty(&rows)?).as_bytes())
        }
        PipelinesAction::List { json: false } => {
            let width = built_in_pipelines()
                .map(|pipeline| pipeline.name.len())
                .max()
                .unwrap_or_default();
            let text: String = built_in_pipelines()
                .map(|pipeline| format!("{:<width$}  {}\n", pipeline.name, pipeline.description()))
                .collect();
            write_stdout(text.as_bytes())
        }
        PipelinesAction::Show { name } => write_stdout(built_in_pipeline(&name)?.toml.as_bytes()),
    }
}
