//! What every sios process does the same way: logging and shutdown signals.

/// How a sios binary ends: success, or its error on one line of stderr,
/// `program: error: cause: cause`, and exit status 1. One line, because the
/// kernel shows a child's last line of stderr as the reason it died
/// (`sios status`), and an error's causes are that reason.
pub fn finish<E>(program: &str, result: Result<(), E>) -> std::process::ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync>,
{
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{program}: {}", error_line(err.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause after a colon. A cause
/// whose words the line already holds is left out: many errors quote their
/// cause in their own message, and saying it twice helps nobody.
pub fn error_line(err: &(dyn std::error::Error + Send + Sync)) -> String {
    let mut line = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let words = cause.to_string();
        if !line.contains(&words) {
            line.push_str(": ");
            line.push_str(&words);
        }
        next = cause.source();
    }
    line
}

/// What is logged when `SIOS_LOG` is not set: sios's own `info`, and only
/// warnings and errors from tarpc. tarpc opens an `info` span for every call
/// it sends or serves, and the log formats each span's fields (a trace id,
/// an RFC 3339 deadline) when it opens, logged or not: under load that was
/// a tenth of the kernel's CPU time, for spans no line showed.
/// `SIOS_LOG=info` brings them back (each line then names its call).
pub const DEFAULT_LOG_FILTER: &str = "info,tarpc=warn";

/// Logs to stderr, filtered by `SIOS_LOG` (default [`DEFAULT_LOG_FILTER`]),
/// every line tagged with the process's component name. Children of the
/// kernel log without colour, because their stderr is a pipe the kernel reads.
pub fn init_tracing(component: &'static str) {
    let (filter, mistake) = log_filter(std::env::var("SIOS_LOG").ok().as_deref());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .finish();
    // Only fails if a subscriber is already set, which is then the one to keep.
    let _ = tracing::subscriber::set_global_default(subscriber);
    if let Some(mistake) = mistake {
        tracing::warn!("{mistake}");
    }
    tracing::debug!(component, "logging initialised");
}

/// Whether `text` parses as a `SIOS_LOG` filter.
pub fn is_log_filter(text: &str) -> bool {
    tracing_subscriber::EnvFilter::try_new(text).is_ok()
}

/// The filter `SIOS_LOG` asks for, or the default when it is unset; when it
/// does not parse, the default and what to tell the operator (a typo in a
/// setting must not silently change what is logged).
fn log_filter(setting: Option<&str>) -> (tracing_subscriber::EnvFilter, Option<String>) {
    use tracing_subscriber::EnvFilter;
    let Some(text) = setting else {
        return (EnvFilter::new(DEFAULT_LOG_FILTER), None);
    };
    match EnvFilter::try_new(text) {
        Ok(filter) => (filter, None),
        Err(err) => (
            EnvFilter::new(DEFAULT_LOG_FILTER),
            Some(format!(
                "SIOS_LOG={text:?} is not a log filter ({err}); logging with the default \
                 `{DEFAULT_LOG_FILTER}` instead. Write levels and targets, e.g. \
                 SIOS_LOG=debug or SIOS_LOG=info,sios_kernel=debug"
            )),
        ),
    }
}

/// Ends the process (SIGABRT, after the panic is reported) when a thread
/// whose name starts with `prefix` panics. For threads the process cannot
/// work without, such as the audit log's writer and signer: with one gone
/// the process would go on answering its readiness probe while recording
/// nothing, and its supervisor would never restart it. Dying instead lets
/// the supervisor restart it, and the restart's recovery run. Panics on
/// other threads unwind as usual (and may be caught), and so do panics
/// inside [`catch_panic`] on any thread.
pub fn abort_when_thread_panics(prefix: &'static str) {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        if CATCHING.with(|depth| depth.get() > 0) {
            return;
        }
        let thread = std::thread::current();
        if let Some(name) = thread.name().filter(|n| n.starts_with(prefix)) {
            tracing::error!(
                thread = name,
                "a thread this process cannot work without panicked; exiting so that it is restarted"
            );
            std::process::abort();
        }
    }));
}

thread_local! {
    /// How many [`catch_panic`] calls the current thread is inside.
    static CATCHING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Runs `f`; a panic inside it becomes `Err` with the panic's message. For
/// code expected to panic on bad input it does not control (e.g. a storage
/// engine reading a damaged file), where the caller reports the damage
/// instead: such a panic does not end the process even on a thread that
/// [`abort_when_thread_panics`] watches.
pub fn catch_panic<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, String> {
    CATCHING.with(|depth| depth.set(depth.get() + 1));
    let result = std::panic::catch_unwind(f);
    CATCHING.with(|depth| depth.set(depth.get() - 1));
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Runs a service process's server: a single-threaded tokio runtime accepting
/// connections on `listener` (the inherited socket) and handing each to
/// `on_connection`, until SIGTERM or SIGINT.
pub fn serve_until_signal(
    component: &'static str,
    listener: std::os::unix::net::UnixListener,
    on_connection: impl FnMut(tokio::net::UnixStream),
) -> std::io::Result<()> {
    serve_with_companion(
        component,
        listener,
        std::future::pending::<()>(),
        on_connection,
    )
}

/// [`serve_until_signal`], with `companion` running as a task of the same
/// runtime (on the same thread) until the server stops; e.g. the audit
/// log's committer, so that requests are committed on the thread that
/// decodes them.
///
/// The companion is work the server cannot do without: if it ends first
/// (it panicked, or returned), this returns an error at once, so that the
/// process exits and its supervisor restarts it, instead of serving
/// requests that nothing will ever carry out.
pub fn serve_with_companion(
    component: &'static str,
    listener: std::os::unix::net::UnixListener,
    companion: impl std::future::Future<Output = ()> + Send + 'static,
    on_connection: impl FnMut(tokio::net::UnixStream),
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let mut companion = tokio::spawn(companion);
        tracing::info!("{component} ready");
        let served = tokio::select! {
            result = crate::transport::accept_loop(listener, on_connection) => result,
            signal = shutdown_signal() => {
                tracing::info!("{} received; {component} stopping", signal?);
                Ok(())
            }
            ended = &mut companion => {
                let how = match ended {
                    Err(e) if e.is_panic() => "panicked (its message is above)",
                    _ => "stopped",
                };
                tracing::error!("the {component}'s own worker {how}; exiting so that it is restarted");
                Err(std::io::Error::other(format!(
                    "the {component}'s own worker {how}; it cannot serve without it"
                )))
            }
        };
        companion.abort();
        served
    })
}

#[cfg(test)]
mod error_line_tests {
    use super::error_line;

    /// An error that quotes its cause, as many thiserror messages do.
    #[derive(Debug)]
    struct Quoting(std::io::Error);
    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot read config.toml: {}", self.0)
        }
    }
    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// An error that names only what it was doing; its cause says why.
    #[derive(Debug)]
    struct Context(Quoting);
    impl std::fmt::Display for Context {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "starting the kernel")
        }
    }
    impl std::error::Error for Context {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn every_cause_is_said_once() {
        let missing = || std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            error_line(&Context(Quoting(missing()))),
            format!(
                "starting the kernel: cannot read config.toml: {}",
                missing()
            )
        );
    }
}

#[cfg(test)]
mod log_filter_tests {
    use super::{DEFAULT_LOG_FILTER, is_log_filter, log_filter};
    use tracing::Level;

    /// A `SIOS_LOG` that does not parse falls back to the default and says
    /// so, naming the setting and how to write one; a good one is used.
    #[test]
    fn a_bad_sios_log_is_reported_and_the_default_used() {
        let default = tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER).to_string();
        let (filter, mistake) = log_filter(Some("info,tarpc=loud"));
        assert_eq!(filter.to_string(), default);
        let mistake = mistake.expect("a mistake to report");
        for words in [
            "SIOS_LOG=\"info,tarpc=loud\"",
            "is not a log filter",
            "SIOS_LOG=debug",
        ] {
            assert!(mistake.contains(words), "{words}\n{mistake}");
        }
        assert!(!is_log_filter("info,tarpc=loud") && is_log_filter("warn"));
        let (filter, mistake) = log_filter(Some("warn"));
        assert_eq!((filter.to_string(), mistake), ("warn".to_owned(), None));
        let (filter, mistake) = log_filter(None);
        assert_eq!((filter.to_string(), mistake), (default, None));
    }

    /// The default keeps sios's own `info` lines and tarpc's warnings, and
    /// leaves out the `info` span tarpc opens for every call.
    #[test]
    fn the_default_log_leaves_out_tarpcs_call_spans_and_keeps_its_warnings() {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::span_enabled!(target: "tarpc::server", Level::INFO));
            assert!(!tracing::span_enabled!(target: "tarpc::client", Level::INFO));
            assert!(tracing::event_enabled!(target: "tarpc::client", Level::WARN));
            assert!(tracing::event_enabled!(target: "sios_kernel::appliance", Level::INFO));
            assert!(!tracing::event_enabled!(target: "sios_kernel::appliance", Level::DEBUG));
        });
    }
}
