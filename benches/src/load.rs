//! A UDP load generator that can outrun the node: IoTStream datagrams built on the fly
//! and sent 64 at a time with `sendmmsg(2)` on a connected socket, paced to a target rate.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use telemesh_proto::wire::iotstream::{MsgType, Repr};

/// Datagrams per `sendmmsg` call.
pub const BATCH: usize = 64;

/// Unique IoTStream DATA datagrams (batch 5) round-robin over `devices` devices.
#[derive(Debug)]
pub struct Traffic {
    devices: u16,
    next_device: u16,
    seqs: Vec<u16>,
    /// Datagrams sent per device: its device time in ms since `base_ms`.
    counts: Vec<u64>,
    base_ms: u64,
    sent: u64,
}

impl Traffic {
    pub fn new(devices: u16) -> Traffic {
        let base_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let n = usize::from(devices.max(1));
        Traffic { devices: devices.max(1), next_device: 0, seqs: vec![0; n], counts: vec![0; n], base_ms, sent: 0 }
    }

    /// Writes the next datagram into `buf` (≥ 32 bytes) and returns its length.
    pub fn next_into(&mut self, buf: &mut [u8]) -> usize {
        let d = self.next_device;
        self.next_device = (self.next_device + 1) % self.devices;
        let seq = &mut self.seqs[usize::from(d)];
        *seq = seq.wrapping_add(1);
        // One millisecond of device time per packet of the device keeps identities unique.
        // The time counts on past the 16-bit seq's wraparound (every 65,536 packets), as a
        // device's clock does: it once went back with the seq, and every datagram after a
        // wrap became a late record for a window already sealed.
        let count = &mut self.counts[usize::from(d)];
        *count += 1;
        let ts_ms = self.base_ms + *count;
        let v = (self.sent % 1000) as f32 / 10.0;
        self.sent += 1;
        let repr = Repr::new(MsgType::Data, 1000 + d, *seq, (ts_ms % (1 << 32)) as u32, &[v, v + 1.0, v + 2.0, v + 3.0, v + 4.0])
            .expect("five readings make a valid DATA batch");
        let n = repr.buffer_len();
        repr.emit(&mut telemesh_proto::wire::iotstream::Packet::new_unchecked(&mut buf[..n]));
        n
    }
}

/// What one load run sent.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub datagrams: u64,
    pub elapsed: Duration,
}

/// Sends for `duration` at `rate` datagrams/s (`None`: as fast as possible).
pub fn blast(to: SocketAddr, traffic: &mut Traffic, rate: Option<f64>, duration: Duration) -> io::Result<Sent> {
    let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    sock.connect(to)?;
    let mut bufs = vec![[0u8; 64]; BATCH];
    let mut lens = [0usize; BATCH];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(sent as f64 / r);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        for (buf, len) in bufs.iter_mut().zip(lens.iter_mut()) {
            *len = traffic.next_into(buf);
        }
        let slices: Vec<&[u8]> = bufs.iter().zip(lens.iter()).map(|(b, l)| &b[..*l]).collect();
        let mut off = 0;
        while off < slices.len() {
            off += mmsg::send(&sock, &slices[off..])?;
        }
        sent += BATCH as u64;
    }
    Ok(Sent { datagrams: sent, elapsed: start.elapsed() })
}

#[allow(unsafe_code)]
mod mmsg {
    use std::io;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// `sendmmsg(2)` on a connected socket; returns how many datagrams went out.
    pub fn send(sock: &UdpSocket, datagrams: &[&[u8]]) -> io::Result<usize> {
        let mut iovecs: Vec<libc::iovec> = datagrams
            .iter()
            .map(|d| libc::iovec { iov_base: d.as_ptr() as *mut libc::c_void, iov_len: d.len() })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: msghdr is plain data; all-zero is a valid "no name, no control" header.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_iov = iov;
                hdr.msg_iovlen = 1;
                libc::mmsghdr { msg_hdr: hdr, msg_len: 0 }
            })
            .collect();
        // SAFETY: `msgs` points at `iovecs`, which point at `datagrams`; all outlive the call.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // A full loopback queue refuses the batch: the receiver's loss, not an error.
            if e.raw_os_error() == Some(libc::ENOBUFS) || e.raw_os_error() == Some(libc::ECONNREFUSED) {
                return Ok(datagrams.len());
            }
            return Err(e);
        }
        Ok((n as usize).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemesh_proto::wire::iotstream::Packet;

    #[test]
    fn device_time_goes_on_past_the_seq_wraparound() {
        let mut traffic = Traffic::new(1);
        let mut buf = [0u8; 64];
        let mut last: Option<(u16, u32)> = None;
        for _ in 0..70_000 {
            let n = traffic.next_into(&mut buf);
            let p = Packet::new_checked(&buf[..n]).expect("valid");
            if let Some((seq, ts)) = last {
                assert_eq!(p.seq(), seq.wrapping_add(1));
                assert_eq!(p.timestamp(), ts.wrapping_add(1), "one ms later, also after seq {seq}");
            }
            last = Some((p.seq(), p.timestamp()));
        }
    }
}
