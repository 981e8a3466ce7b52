//! Command-line flags (clap), turned once into typed, validated settings ([`Mode`]);
//! nothing past [`Cli::into_mode`] sees the parser.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::data::{self, DatasetName};
use crate::runtime::{self, Runtime};

#[derive(Debug, Parser)]
#[command(
    name = "dc-search",
    version,
    about = "Deep Compression with an automatic per-layer sparsity search under an accuracy floor",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the dense model with the config's recipe (cached; --retrain to force).
    Train {
        /// A preset (lenet, lenet-300-100) or a path to a .toml config.
        model: String,
        /// Train even if a cached model exists.
        #[arg(long)]
        retrain: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Print validation and test accuracy of the dense model (trained first if needed).
    Eval {
        /// A preset (lenet, lenet-300-100) or a path to a .toml config.
        model: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Flags of every command that computes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Intra-op threads for libtorch (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of initialisation, batch order and every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Folder holding the four IDX files (default: where scripts/setup.sh put them; also
    /// DC_SEARCH_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Dataset, overriding the config's.
    #[arg(long, value_enum)]
    dataset: Option<DatasetName>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// What to run, with validated settings.
#[derive(Debug)]
pub enum Mode {
    Train { cfg: Config, rt: Runtime, retrain: bool },
    Eval { cfg: Config, rt: Runtime },
}

/// Parses the process arguments (clap prints usage errors and exits).
pub fn parse() -> Cli {
    Cli::parse()
}

impl Common {
    fn resolve(&self, model: &str) -> Result<(Config, Runtime)> {
        let mut cfg = Config::resolve(model)?;
        if let Some(d) = self.dataset {
            cfg.data.dataset = d;
        }
        if let Some(dir) = data::dir_from_env(self.data_dir.clone()) {
            cfg.data.dir = Some(dir);
        }
        if self.threads == Some(0) {
            anyhow::bail!("--threads 0: give at least 1");
        }
        let rt = Runtime { device: runtime::parse_device(&self.device)?, seed: self.seed, threads: self.threads, quiet: self.quiet };
        Ok((cfg, rt))
    }
}

impl Cli {
    /// Validates the flags into a [`Mode`].
    pub fn into_mode(self) -> Result<Mode> {
        match self.command {
            Some(Command::Train { model, retrain, common }) => {
                let (cfg, rt) = common.resolve(&model)?;
                Ok(Mode::Train { cfg, rt, retrain })
            }
            Some(Command::Eval { model, common }) => {
                let (cfg, rt) = common.resolve(&model)?;
                Ok(Mode::Eval { cfg, rt })
            }
            None => anyhow::bail!("no command given: try `dc-search train lenet` or `dc-search --help`"),
        }
    }
}
