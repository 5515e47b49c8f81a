//! `tensorgate plugin new|build|check`: scaffold a plugin from the
//! templates beside this module (`templates/`), build it into a component
//! — a Rust crate for wasm32 with the right toolchain (Debian's rustc-web
//! with build-std), or a Python plugin with componentize-py — check it as
//! a host would, and install it as a bundle `REPO/NAME/VERSION/{manifest.toml,
//! model.pt, plugin.wasm}` (through [`crate::install`]); see
//! docs/writing-a-plugin.md.
//!
//! Files, bottom-up: `python.rs` (componentize-py), `bundle.rs` (what a
//! plugin's manifest says its bundle holds, and assembling it), `build.rs`
//! (compile either language; `plugin build`), `check.rs` (`plugin check`),
//! `new.rs` (`plugin new`); this file only parses and dispatches.

mod build;
mod bundle;
mod check;
mod new;
mod python;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

/// `tensorgate plugin ...`
#[derive(Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin DIR/NAME from the template (a JSON-features-in,
    /// {label: score}-out plugin that builds and serves as is): a Rust crate,
    /// or with `--lang python` a folder with `plugin.py`.
    New {
        /// Application and crate name ([A-Za-z0-9_-]).
        name: String,
        /// Folder to create the plugin in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The plugin's language.
        #[arg(long, value_enum, default_value_t = new::Lang::Rust)]
        lang: new::Lang,
        /// The tensorgate plugin SDK: sdk/plugin (Rust) or sdk/python-plugin
        /// (Python) of a tensorgate checkout; default: this checkout's.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin crate in DIR if needed, then check it as a host
    /// would before serving it (the manifest against the model and plugin)
    /// and run each sample (`samples/`, or the `[warmup]` item) through
    /// plugin and model, printing each output or error. Needs no host.
    Check {
        /// The plugin crate (or Python plugin folder).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Target directory (default: DIR/target).
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Python plugins: the Python SDK (default: $TENSORGATE_PYTHON_SDK, else this checkout's sdk/python-plugin).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin in DIR into a component (a Rust crate for wasm32, or
    /// a Python plugin with componentize-py, skipped when its sources are
    /// unchanged) and, with
    /// --repository, check the bundle (as `plugin check`) and install it:
    /// the manifest, the model file it names, the plugin, `samples/` and
    /// the `[warmup]` file.
    Build {
        /// The plugin crate.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Model repository to install the bundle into (REPO/NAME/VERSION/).
        #[arg(long)]
        repository: Option<PathBuf>,
        /// Target directory (default: DIR/target); share one to reuse the wasm32 std build.
        #[arg(long)]
        target_dir: Option<PathBuf>,
        /// Python plugins: the Python SDK (default: $TENSORGATE_PYTHON_SDK, else this checkout's sdk/python-plugin).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// Runs a `plugin` subcommand (no host connection needed).
pub fn main(args: &PluginArgs) -> ExitCode {
    let result = match &args.command {
        PluginCommand::New { name, dir, lang, sdk } => new::new(name, dir, *lang, sdk.as_deref()),
        PluginCommand::Build { dir, repository, target_dir, sdk } => build::build(dir, repository.as_deref(), target_dir.as_deref(), sdk.as_deref()),
        PluginCommand::Check { dir, target_dir, sdk } => check::check(dir, target_dir.as_deref(), sdk.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // 1: the bundle was checked and failed; 2: it could not be built or checked.
            ExitCode::from(if e.downcast_ref::<crate::install::CheckFailed>().is_some() { 1 } else { 2 })
        }
    }
}
