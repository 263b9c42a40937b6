//! Figures read from `/proc` when `/metrics` is scraped, never on the ingest path: the
//! process's (`process_*`, the names every Prometheus client library uses) and the kernel's
//! drops on the node's UDP sockets.

use std::fmt;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::DialectLabel;

/// `process_*`: CPU time, memory, open files, threads and start time of this process.
#[derive(Debug, Default)]
pub struct Process;

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Process {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        // Outside Linux, or with /proc hidden, the family is absent rather than wrong.
        let Ok(me) = procfs::process::Process::myself() else { return Ok(()) };
        let ticks = procfs::ticks_per_second().max(1) as f64;
        if let Ok(stat) = me.stat() {
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(e.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
            let rss = stat.rss.saturating_mul(procfs::page_size());
            gauge(&mut e, "process_resident_memory_bytes", "Resident memory size in bytes.", rss as f64)?;
            gauge(&mut e, "process_virtual_memory_bytes", "Virtual memory size in bytes.", stat.vsize as f64)?;
            gauge(&mut e, "process_threads", "Number of OS threads in the process.", stat.num_threads as f64)?;
            if let Ok(boot) = procfs::boot_time_secs() {
                let start = boot as f64 + stat.starttime as f64 / ticks;
                let help = "Start time of the process since unix epoch in seconds.";
                gauge(&mut e, "process_start_time_seconds", help, start)?;
            }
        }
        if let Ok(n) = me.fd_count() {
            gauge(&mut e, "process_open_fds", "Number of open file descriptors.", n as f64)?;
        }
        if let Ok(limits) = me.limits() {
            let max = match limits.max_open_files.soft_limit {
                procfs::process::LimitValue::Value(v) => v as f64,
                procfs::process::LimitValue::Unlimited => f64::INFINITY,
            };
            gauge(&mut e, "process_max_fds", "Maximum number of open file descriptors.", max)?;
        }
        Ok(())
    }
}

/// The kernel's drops on the node's UDP listeners: each socket's own count (the `drops`
/// column of `/proc/net/udp` and `udp6`: datagrams that found its receive buffer full),
/// and the network namespace's `RcvbufErrors` (`/proc/net/snmp` and `snmp6`), all
/// sockets together.
#[derive(Debug, Default, Clone)]
pub struct Udp {
    /// Each listener's dialect and socket inode.
    sockets: Arc<Mutex<Vec<(&'static str, u64)>>>,
}

impl Udp {
    /// Counts the drops of `socket`, the listener of `dialect`, from now on.
    pub fn watch(&self, dialect: &'static str, socket: &impl AsRawFd) {
        // The inode /proc/net/udp names the socket by.
        match std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd())) {
            Ok(m) => self.sockets.lock().unwrap_or_else(PoisonError::into_inner).push((dialect, m.ino())),
            Err(e) => tracing::debug!(dialect, error = %e, "no inode for the UDP socket: its drops are not counted"),
        }
    }

    /// Each watched socket's drops, by dialect.
    pub fn socket_drops(&self) -> Vec<(&'static str, u64)> {
        let sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut drops: Vec<(&'static str, u64)> = sockets.iter().map(|(d, _)| (*d, 0)).collect();
        for table in ["/proc/self/net/udp", "/proc/self/net/udp6"] {
            let Ok(text) = std::fs::read_to_string(table) else { continue };
            for (inode, n) in text.lines().skip(1).filter_map(drops_of) {
                for (i, (_, ino)) in sockets.iter().enumerate() {
                    if *ino == inode {
                        drops[i].1 += n;
                    }
                }
            }
        }
        drops
    }
}

/// The inode and drops of a line of `/proc/net/udp`: `sl local rem st tx:rx tr:when
/// retrnsmt uid timeout inode ref pointer drops`.
fn drops_of(line: &str) -> Option<(u64, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 13 {
        return None;
    }
    Some((fields[9].parse().ok()?, fields[12].parse().ok()?))
}

impl Collector for Udp {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let drops = self.socket_drops();
        let c = ConstCounter::new(0u64);
        let mut family = e.encode_descriptor(
            "udp_socket_drops",
            "Datagrams the kernel dropped on a listener's socket before the node read them (receive buffer full), \
             by dialect.",
            None,
            c.metric_type(),
        )?;
        for (dialect, n) in drops {
            ConstCounter::new(n).encode(family.encode_family(&DialectLabel { dialect })?)?;
        }
        let Ok(me) = procfs::process::Process::myself() else { return Ok(()) };
        let v4 = me.snmp().map(|s| s.udp_rcvbuf_errors);
        let v6 = me.snmp6().map(|s| s.udp_rcvbuf_errors);
        if v4.is_ok() || v6.is_ok() {
            let c = ConstCounter::new(v4.unwrap_or(0) + v6.unwrap_or(0));
            c.encode(e.encode_descriptor(
                "udp_rcvbuf_errors",
                "UDP datagrams dropped for a full receive buffer on any socket of the host's network namespace \
                 (RcvbufErrors of /proc/net/snmp and snmp6).",
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_of_proc_net_udp_gives_its_inode_and_drops() {
        let line = "  775: 0100007F:A3B5 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 \
                    4242 2 0000000000000000 17";
        assert_eq!(drops_of(line), Some((4242, 17)));
        assert_eq!(drops_of("   sl  local_address rem_address   st tx_queue rx_queue tr tm->when"), None);
    }

    #[test]
    fn a_watched_socket_is_found_with_its_drops() {
        // A socket with the smallest receive buffer, never read: most of a burst is dropped.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
        socket.set_recv_buffer_size(1).expect("rcvbuf");
        socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr").into()).expect("bind");
        let socket: std::net::UdpSocket = socket.into();
        let udp = Udp::default();
        udp.watch("iotstream", &socket);
        assert_eq!(udp.socket_drops(), vec![("iotstream", 0)]);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        for _ in 0..200 {
            sender.send_to(&[0u8; 1000], socket.local_addr().expect("addr")).expect("send");
        }
        let drops = udp.socket_drops();
        assert!(drops[0].1 >= 100, "{drops:?}");
    }
}
