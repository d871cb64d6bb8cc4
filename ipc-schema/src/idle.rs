//! `[performance] low_latency_idle`: every CPU polls when idle, instead of
//! halting, for as long as the appliance runs. The kernel holds it; the
//! audit bench holds it too when asked (`SIOS_BENCH_LOW_LATENCY_IDLE=1`),
//! and the invoke bench compares appliances with it off and on.
//!
//! Each governed action crosses several processes (client → kernel → audit
//! → brain → audit → client), and each hand-off wakes a thread whose CPU has
//! usually gone idle. A halted CPU takes tens of µs to wake, more on a
//! virtual machine, where the host must reschedule the halted vCPU. Linux's
//! PM QoS interface lets a process ask for a maximum wake-up latency: while
//! a file descriptor of `/dev/cpu_dma_latency` holding the value 0 stays
//! open, the cpuidle governor picks only the polling idle state, and the
//! request ends when the descriptor is closed (here: when the kernel exits,
//! however it exits). Measured on the 2-vCPU machine this project is
//! developed on, by the invoke bench's last table (`cargo bench -p sios-e2e
//! --bench invoke`, appliances off and on in turn, two rounds): one client's
//! invoke of the smallest brain took 1,269–1,277 µs against 1,739–1,788 µs,
//! 64 clients got 3,727–3,759 requests/s against 3,429–3,514, and a
//! disk-free kernel round trip took 20–21 µs against 51–56 µs. Earlier runs
//! with the same request held by hand: 64 clients did not always gain
//! (3,946 against 4,514 requests/s once). The price is power: idle CPUs
//! keep running.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

/// The PM QoS device (see the Linux documentation, `pm_qos_interface`).
pub const CPU_DMA_LATENCY: &str = "/dev/cpu_dma_latency";

/// Whether the appliance holds CPUs out of their halting idle states.
#[derive(Debug)]
pub enum IdleLatency {
    /// Not asked for: the machine's own idle policy applies.
    Default,
    /// Held: the descriptor must stay open for the request to last.
    Polling(File),
    /// Asked for, but the request could not be made; why, in words.
    Unavailable(String),
}

impl IdleLatency {
    /// Makes the request if `wanted` (from `[performance]`), at `device`.
    pub fn request(wanted: bool, device: &Path) -> IdleLatency {
        if !wanted {
            return IdleLatency::Default;
        }
        let held = std::fs::OpenOptions::new()
            .write(true)
            .open(device)
            .and_then(|mut file| {
                // The device takes a native-endian 32-bit count of µs.
                file.write_all(&0i32.to_ne_bytes())?;
                Ok(file)
            });
        match held {
            Ok(file) => {
                tracing::info!(
                    "low-latency idle held: CPUs poll instead of halting while the appliance runs"
                );
                IdleLatency::Polling(file)
            }
            Err(err) => {
                let why = format!(
                    "low_latency_idle is set but {} could not be held ({err}): it needs root \
                     and a kernel with PM QoS; running with the machine's own idle policy",
                    device.display()
                );
                tracing::warn!("{why}");
                IdleLatency::Unavailable(why)
            }
        }
    }

    /// The line `sios status` shows; `None` when not asked for.
    pub fn describe(&self) -> Option<String> {
        match self {
            IdleLatency::Default => None,
            IdleLatency::Polling(_) => Some(format!(
                "polling (low_latency_idle: 0 µs held on {CPU_DMA_LATENCY})"
            )),
            IdleLatency::Unavailable(why) => Some(why.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_asked_for_touches_nothing() {
        let idle = IdleLatency::request(false, Path::new("/nonexistent/device"));
        assert!(matches!(idle, IdleLatency::Default));
        assert_eq!(idle.describe(), None);
    }

    #[test]
    fn a_device_that_cannot_be_held_is_said_plainly() {
        let idle = IdleLatency::request(true, Path::new("/nonexistent/cpu_dma_latency"));
        let said = idle.describe().unwrap();
        assert!(matches!(idle, IdleLatency::Unavailable(_)));
        assert!(
            said.contains("could not be held") && said.contains("needs root"),
            "{said}"
        );
    }

    #[test]
    fn the_request_writes_zero_microseconds_and_keeps_the_file() {
        // A plain file stands in for the device: what is written, and that
        // the descriptor stays open, is what the kernel's PM QoS reads.
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("cpu_dma_latency");
        std::fs::write(&device, b"").unwrap();
        let idle = IdleLatency::request(true, &device);
        assert!(matches!(idle, IdleLatency::Polling(_)), "{idle:?}");
        assert_eq!(std::fs::read(&device).unwrap(), 0i32.to_ne_bytes());
        assert!(idle.describe().unwrap().starts_with("polling"));
    }
}
