//! The command line every PuyPuy binary shares: `--config PATH`, `--check-config [--strict]`,
//! `--print-config KEY…`, `--help`, and for the producers `--once` and `--dry-run`. Each binary
//! says which of the producer flags it takes ([`Supports`]); its `--help` lists only those, and
//! any other flag is refused with exit status 2.
//!
//! Without `--config`, the file is `$PUYPUY_CONFIG`, else `config.ini` beside `puypuy.sh` (the
//! binaries run from the checkout's `target/release/`), else `./config.ini`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{self, Config};

/// The flags a binary takes beyond the common ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Supports {
    /// `--once` and `--dry-run`: the producers.
    pub one_cycle: bool,
    /// A subcommand (`send …`) whose own arguments follow it unparsed: the shipper.
    pub subcommand: Option<&'static str>,
}

#[derive(Debug, Clone, Default)]
pub struct Cli {
    pub config: PathBuf,
    pub once: bool,
    pub dry_run: bool,
    /// Validate the config, print errors and warnings, exit (0 valid, 2 invalid).
    pub check_config: bool,
    /// With `--check-config`: warnings count as errors.
    pub strict: bool,
    /// `--print-config KEY…`: print these `[SelfConfig]` values and exit.
    pub print_config: Vec<String>,
    pub help: bool,
    /// The subcommand and everything after it.
    pub rest: Vec<String>,
}

impl Cli {
    pub fn parse(args: impl IntoIterator<Item = String>, supports: Supports) -> Result<Cli, String> {
        let mut cli = Cli::default();
        let mut config = None;
        let mut args = args.into_iter().peekable();
        while let Some(arg) = args.next() {
            if supports.subcommand == Some(arg.as_str()) {
                cli.rest.push(arg);
                cli.rest.extend(args.by_ref());
                break;
            }
            match arg.as_str() {
                "--config" | "-c" => config = Some(args.next().ok_or("--config needs a path")?),
                a if a.starts_with("--config=") => config = Some(a["--config=".len()..].to_string()),
                "--once" | "--dry-run" if !supports.one_cycle => {
                    return Err(format!("{arg} is not an option of this program (only the producers take it)"))
                }
                "--once" => cli.once = true,
                "--dry-run" => cli.dry_run = true,
                "--check-config" => cli.check_config = true,
                "--strict" => cli.strict = true,
                "--print-config" => {
                    while let Some(key) = args.next_if(|a| !a.starts_with('-')) {
                        cli.print_config.push(key);
                    }
                    if cli.print_config.is_empty() {
                        return Err(format!(
                            "--print-config needs one or more of: {}",
                            config::PRINTABLE_KEYS.join(" ")
                        ));
                    }
                }
                "--help" | "-h" => cli.help = true,
                a if a.starts_with('-') => return Err(format!("unknown option {a:?}")),
                _ => return Err(format!("unexpected argument {arg:?}")),
            }
        }
        if cli.strict && !cli.check_config {
            return Err("--strict goes with --check-config".into());
        }
        cli.config = match config {
            Some(c) => PathBuf::from(c),
            None => default_config_path(),
        };
        Ok(cli)
    }

    /// What `--help` prints: the usage line(s) given and the options this binary takes.
    pub fn usage(usage: &str, supports: Supports) -> String {
        let mut text = format!("{usage}\n\noptions:\n");
        text.push_str(
            "  --config PATH        config file (default: $PUYPUY_CONFIG, else config.ini beside puypuy.sh)\n",
        );
        if supports.one_cycle {
            text.push_str("  --once               run one cycle, wait until the shipper acknowledged it, exit\n");
            text.push_str("  --dry-run            print the points (with the host's tags) instead of sending them\n");
        }
        text.push_str(
            "  --check-config       validate the config, print errors and warnings, exit (0 valid, 2 invalid)\n",
        );
        text.push_str(
            "  --strict             with --check-config: warnings (unknown sections or keys) make it exit 2\n",
        );
        text.push_str(&format!(
            "  --print-config KEY…  print resolved [SelfConfig] values, one per line ({})\n",
            config::PRINTABLE_KEYS.join(", ")
        ));
        text.push_str("  --help               this text");
        text
    }

    /// `--help`, `--print-config` and `--check-config`: the commands that answer and exit. `None`
    /// when none was asked; else the exit status, after printing the answer.
    pub fn answer_and_exit(&self, process: &str, usage: &str, supports: Supports) -> Option<ExitCode> {
        if self.help {
            println!("{}", Cli::usage(usage, supports));
            return Some(ExitCode::SUCCESS);
        }
        if !self.print_config.is_empty() {
            return Some(match config::print_values(&self.config, &self.print_config) {
                Ok(values) => {
                    println!("{}", values.join("\n"));
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{process}: {errors}");
                    ExitCode::from(2)
                }
            });
        }
        if self.check_config {
            return Some(check_config(&self.config, self.strict));
        }
        None
    }
}

/// Prints every error and warning of the file; 2 when invalid (or, with `strict`, warned about).
pub fn check_config(path: &Path, strict: bool) -> ExitCode {
    let (errors, warnings) = Config::check(path);
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    for w in &warnings {
        eprintln!("{}: warning: {w}", shown.display());
    }
    if !errors.is_empty() {
        eprintln!("invalid configuration:\n{}", config::ConfigErrors(errors));
        return ExitCode::from(2);
    }
    if strict && !warnings.is_empty() {
        eprintln!("{}: {} warnings (--strict)", shown.display(), warnings.len());
        return ExitCode::from(2);
    }
    println!("{}: configuration OK", shown.display());
    ExitCode::SUCCESS
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], supports: Supports) -> Result<Cli, String> {
        Cli::parse(args.iter().map(|s| s.to_string()), supports)
    }

    const SHIPPER: Supports = Supports { one_cycle: false, subcommand: Some("send") };
    const PRODUCER: Supports = Supports { one_cycle: true, subcommand: None };

    /// Regression: the shipper's help advertised --once and --dry-run, and accepted them: --once
    /// never exited and --dry-run wrote to the backend.
    #[test]
    fn shipper_refuses_the_producer_flags() {
        assert!(parse(&["--once"], SHIPPER).unwrap_err().contains("--once is not an option"));
        assert!(parse(&["--dry-run"], SHIPPER).is_err());
        assert!(!Cli::usage("usage: puypuy-shipper", SHIPPER).contains("--once"));
        assert!(Cli::usage("usage: puypuy-collector", PRODUCER).contains("--once"));
        let c = parse(&["--config", "x.ini", "--once", "--dry-run"], PRODUCER).unwrap();
        assert!(c.once && c.dry_run);
        assert_eq!(c.config, PathBuf::from("x.ini"));
    }

    #[test]
    fn unknown_flags_and_arguments_are_refused() {
        assert_eq!(parse(&["--onse"], PRODUCER).unwrap_err(), "unknown option \"--onse\"");
        assert!(parse(&["extra"], PRODUCER).is_err());
        assert!(parse(&["--strict"], PRODUCER).is_err());
    }

    #[test]
    fn the_subcommand_keeps_its_own_options() {
        let c = parse(&["--config=a.ini", "send", "x", "1", "--type", "t", "--rate"], SHIPPER).unwrap();
        assert_eq!(c.rest, ["send", "x", "1", "--type", "t", "--rate"]);
        assert_eq!(c.config, PathBuf::from("a.ini"));
    }

    #[test]
    fn print_config_takes_the_keys_up_to_the_next_option() {
        let c = parse(&["--print-config", "tmpdir", "pid_file", "--config", "b.ini"], SHIPPER).unwrap();
        assert_eq!(c.print_config, ["tmpdir", "pid_file"]);
        assert_eq!(c.config, PathBuf::from("b.ini"));
        assert!(parse(&["--print-config"], SHIPPER).is_err());
    }
}
