//! The command line every PuyPuy binary shares: `--config PATH`, `--once`, `--dry-run`.
//!
//! Without `--config`, the file is `$PUYPUY_CONFIG`, else `config.ini` beside `puypuy.sh` (the
//! binaries run from the checkout's `target/release/`), else `./config.ini`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct Cli {
    pub config: PathBuf,
    pub once: bool,
    pub dry_run: bool,
    /// Validate the config, print the result, exit (0 valid, 2 invalid).
    pub check_config: bool,
    /// Arguments that are not options, for subcommands.
    pub rest: Vec<String>,
}

pub const USAGE_OPTIONS: &str = "  --config PATH   config file (default: $PUYPUY_CONFIG, else config.ini beside puypuy.sh)\n  --once          run one cycle, deliver it, exit\n  --dry-run       print the points instead of sending them\n  --check-config  validate the config file and exit (0 valid, 2 invalid)";

impl Cli {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Cli, String> {
        let mut cli = Cli::default();
        let mut config = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--config" | "-c" => config = Some(args.next().ok_or("--config needs a path")?),
                "--once" => cli.once = true,
                "--dry-run" => cli.dry_run = true,
                "--check-config" => cli.check_config = true,
                a if a.starts_with("--config=") => config = Some(a["--config=".len()..].to_string()),
                _ => cli.rest.push(arg),
            }
        }
        cli.config = match config {
            Some(c) => PathBuf::from(c),
            None => default_config_path(),
        };
        Ok(cli)
    }
}

fn default_config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PUYPUY_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir: Option<&Path> = exe.parent();
        while let Some(d) = dir {
            if d.join("puypuy.sh").is_file() {
                return d.join("config.ini");
            }
            dir = d.parent();
        }
    }
    PathBuf::from("config.ini")
}
