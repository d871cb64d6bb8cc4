//! `sios-launch <spec-json>`: applies the restrictions and the sandbox in the
//! spec, then runs the child. Started only by sios-kernel.
//!
//! Without a sandbox it execs the program in place. With one it stays as the
//! program's parent outside the sandbox and exits as the program did (see
//! `sios_launch::jail` for the process tree and the order of the steps).
//!
//! `sios-launch --report <pid> [--text]` prints what is enforced on a running
//! process (`sios_launch::inspect`): JSON, or the table `sios sandbox show`
//! prints. For operators without a kernel to ask, and for tests.
//!
//! Exit status: the program's own, or the program's fatal signal re-raised;
//! 78 (EX_CONFIG) when the launch itself fails, with one line on stderr
//! naming the step, the path and the OS error. Lines starting
//! `sios-launch: notice: ` report something not enforced that did not stop
//! the launch (e.g. no cgroups on this host). `--report`: 0, or 1 with the
//! reason on stderr.

use sios_launch::jail::{LaunchError, launch};
use sios_launch::{EXIT_CONFIG, LaunchSpec, inspect};

fn run() -> Result<std::convert::Infallible, (String, LaunchError)> {
    let mut args = std::env::args().skip(1);
    let (Some(arg), None) = (args.next(), args.next()) else {
        return Err(("sios-launch".into(), LaunchError::Usage));
    };
    let spec = LaunchSpec::from_arg(&arg).map_err(|e| ("sios-launch".to_owned(), e.into()))?;
    launch(&spec).map_err(|e| (spec.name.clone(), e))
}

fn report(args: &[String]) -> i32 {
    let (Some(pid), text) = (
        args.first().and_then(|p| p.parse::<u32>().ok()),
        args.get(1).is_some_and(|a| a == "--text"),
    ) else {
        eprintln!("usage: sios-launch --report <pid> [--text]");
        return 1;
    };
    match inspect::report(pid) {
        Ok(report) if text => {
            print!("{}", inspect::render(&report));
            0
        }
        Ok(report) => match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                println!("{json}");
                0
            }
            Err(err) => {
                eprintln!("sios-launch: report: {err}");
                1
            }
        },
        Err(err) => {
            eprintln!("sios-launch: report: {err}");
            1
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--report") {
        std::process::exit(report(&args[1..]));
    }
    // `run` only returns on failure: success is an exec (or, sandboxed, the
    // launcher exiting as its child did) that never comes back.
    let Err((name, err)) = run();
    eprintln!("sios-launch: {name}: {err}");
    std::process::exit(EXIT_CONFIG);
}
