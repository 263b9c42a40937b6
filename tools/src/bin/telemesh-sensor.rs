//! `telemesh-sensor`: simulates many IoTStream, TinyTelemetry or secure (DTLS) sensors in
//! one process.
//! The logic lives in `telemesh_tools::sensor`; this is only the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use telemesh_proto::wire::Dialect;
use telemesh_tools::dtls;
use telemesh_tools::sensor::{self, Config, TimestampUnit};

const EXAMPLES: &str = "\
Examples:
  # 100 IoTStream devices, one report each per second, to the local collector
  telemesh-sensor --devices 1001-1100

  # TinyTelemetry, 10 readings per DATA, every 5 s, heard by two gateways
  telemesh-sensor --dialect tinytelemetry --devices 1-20 --batch 10 --interval 5s \\
      --to 127.0.0.1:5000 --to 127.0.0.1:6000

  # Load test: 20,000 packets/s in total for 30 s
  telemesh-sensor --devices 1-1000 --rate 20000 --duration 30s --quiet

  # The secure dialect (the secure telemetry README's frame over DTLS): one device, its certificate from the node
  telemesh certs device 1001 --out dev1001
  telemesh-sensor --dialect secure --cert dev1001/device.pem --key dev1001/device.key \
      --ca dev1001/ca.pem --count 20

  # Ten secure devices, one certificate each (certs/1001/device.pem, ...)
  telemesh-sensor --dialect secure --devices 1001-1010 --rate 1000 --duration 10s \
      --cert 'certs/{id}/device.pem' --key 'certs/{id}/device.key' --ca certs/1001/ca.pem

  # Reproducible ground truth without sending, exercising wraparound and reboots
  telemesh-sensor --devices 7 --count 20 --start-seq 65534 --reboot-after 10 \\
      --seed 1 --start-time-ms 1765477199815 --dry-run --truth truth.ndjson

Exit status: 0 when done or stopped by Ctrl-C, 2 for bad options, 1 for other errors.";

/// Simulates many telemetry sensors in one process and sends their UDP datagrams.
///
/// IoTStream (the IoTStream v1 Mini-RFC): each device boots with INIT seq 0, then every interval sends
/// DATA (80%, a batch of float readings) or HEARTBEAT (20%); the 16-bit seq wraps;
/// timestamps are Unix milliseconds mod 2^32.
/// TinyTelemetry (the TinyTelemetry v1 design document): DATA/HEARTBEAT by the same 80/20 rule, typed readings
/// (temperature, humidity, voltage), a 32-bit seq from 0, Unix-second timestamps.
/// Secure (the secure telemetry collection README): frames over DTLS 1.2, one session per device and destination, with
/// a certificate whose CN is the device id; DATA carries CPU=…;MEM=…;TEMP=…, HEARTBEAT an
/// empty payload, a 64-bit seq from 1, Unix-nanosecond timestamps.
///
/// Runs until --count, --duration or Ctrl-C; --truth logs every packet sent.
#[derive(Debug, Parser)]
#[command(name = "telemesh-sensor", version, after_help = EXAMPLES, verbatim_doc_comment)]
struct Cli {
    /// Wire dialect: iotstream, tinytelemetry or secure.
    ///
    /// secure (the secure telemetry README's frame) is DTLS 1.2 and needs --cert, --key and --ca.
    #[arg(long, value_name = "DIALECT", default_value = "iotstream", value_parser = sensor::parse_dialect)]
    dialect: Dialect,

    /// Device ids: 1001, 1001-1100 or 1,5,9-12 [default: 1001; secure: the certificate's].
    ///
    /// One id, an inclusive range, or a comma list of both; no id twice.
    /// TinyTelemetry does not allow device 0. With --dialect secure each device needs its
    /// own certificate naming it (its CN): one device per --cert, or a --cert path with {id}.
    // The full path keeps clap from treating the Vec as a repeated option.
    #[arg(long, value_name = "LIST", value_parser = sensor::parse_devices)]
    devices: Option<::std::vec::Vec<u16>>,

    /// Reporting interval per device: 1s, 5s, 30s, 250ms, ...
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = sensor::parse_duration)]
    interval: Duration,

    /// Interval jitter: each gap is interval × (1 ± FRACTION).
    #[arg(long, value_name = "FRACTION", default_value_t = sensor::DEFAULT_JITTER)]
    jitter: f64,

    /// Readings per DATA packet [default: 5 iotstream, 1 tinytelemetry].
    ///
    /// At most 47 for iotstream and 37 for tinytelemetry (the 200-byte datagram limit).
    #[arg(long, value_name = "N")]
    batch: Option<usize>,

    /// IoTStream timestamp unit: ms or s [default: ms].
    ///
    /// ms: Unix milliseconds mod 2^32 (the IoTStream Mini-RFC's example); s: Unix seconds.
    /// TinyTelemetry timestamps are always Unix seconds.
    #[arg(long, value_name = "UNIT", value_parser = clap::value_parser!(TimestampUnit))]
    timestamp_unit: Option<TimestampUnit>,

    /// First seq after INIT (iotstream) or first seq (tinytelemetry, secure).
    ///
    /// Defaults: 1, 0 and 1. For example 65534 exercises the 16-bit wraparound.
    /// Applies to a device's first boot; after a reboot numbering restarts.
    #[arg(long, value_name = "N")]
    start_seq: Option<u32>,

    /// Reboot each device every N packets (INIT included).
    ///
    /// iotstream: the device sends INIT with seq 0 again and numbers on from 1.
    /// tinytelemetry (no INIT): its seq restarts at 0. Timestamps keep increasing.
    #[arg(long, value_name = "N")]
    reboot_after: Option<u64>,

    /// Total packets/s across all devices, round-robin (overrides --interval).
    #[arg(long, value_name = "PPS")]
    rate: Option<f64>,

    /// Packets per device (INIT included), then stop.
    #[arg(long, value_name = "N")]
    count: Option<u64>,

    /// Stop after this long: 60s, 5m, ...
    #[arg(long, value_name = "DURATION", value_parser = sensor::parse_duration)]
    duration: Option<Duration>,

    /// Seed for packet kinds, readings and jitter [default: random].
    ///
    /// The seed in use is printed at start and in the summary.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Fix the device clock origin (Unix ms) for reproducible packets.
    ///
    /// Timestamps become origin + schedule time, so with --seed every datagram is
    /// reproducible. Default: the real clock when each packet is sent.
    #[arg(long, value_name = "MS")]
    start_time_ms: Option<u64>,

    /// Destination host:port, repeatable [default: 127.0.0.1:5005, tinytelemetry :5000,
    /// secure :5006].
    ///
    /// Every packet is sent to each destination, like several gateways hearing one radio.
    #[arg(long, value_name = "ADDR", value_parser = sensor::parse_addr)]
    to: Vec<SocketAddr>,

    /// Write the ground truth: one NDJSON line per packet.
    ///
    /// Fields: dialect, device, seq, timestamp, kind, readings, sent_at_ns, datagram (hex).
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,

    /// Send nothing and do not wait; only write the truth log.
    ///
    /// Needs --count or --duration. sent_at_ns is then the scheduled time.
    #[arg(long)]
    dry_run: bool,

    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,

    // Authenticated datagrams (issue 13).
    /// Device keys (the node's --device-keys format): a device with a key appends the
    /// authentication trailer, a counter and a tag; the others send plain datagrams.
    #[arg(long, value_name = "FILE")]
    device_keys: Option<PathBuf>,

    /// Each keyed device's first counter [default: Unix seconds at start].
    #[arg(long, value_name = "N", requires = "device_keys")]
    auth_counter: Option<u32>,

    /// Misbehave, to test the node: bad-tag, truncated (the tag cut short) or replay (each
    /// datagram sent twice).
    #[arg(long, value_name = "KIND", requires = "device_keys", value_parser = clap::value_parser!(sensor::Attack))]
    auth_attack: Option<sensor::Attack>,

    // The secure dialect (issue 13).
    /// The device's certificate (PEM), its subject CN the device id, as `telemesh certs
    /// device` writes it. `{id}` in the path stands for each device's id.
    ///
    /// Repeatable with --key and --ca: one set for every --to, or one set per --to, in
    /// order (sites with a CA each).
    #[arg(long, value_name = "FILE", requires_all = ["key", "ca"])]
    cert: Vec<PathBuf>,

    /// The device's private key (PEM); `{id}` as in --cert.
    #[arg(long, value_name = "FILE", requires_all = ["cert", "ca"])]
    key: Vec<PathBuf>,

    /// The CA that signed the node's certificate (PEM): the node is verified against it.
    #[arg(long, value_name = "FILE", requires_all = ["cert", "key"])]
    ca: Vec<PathBuf>,

    /// How long the DTLS handshakes may take before sending starts.
    #[arg(long, value_name = "DURATION", value_parser = sensor::parse_duration,
        default_value = "30s", requires = "cert")]
    handshake_timeout: Duration,
}

impl Cli {
    /// The simulator's configuration, whether to be quiet, and the authentication options.
    fn into_config(self) -> Result<(Config, bool, AuthArgs, Option<sensor::Dtls>), String> {
        let auth =
            AuthArgs { device_keys: self.device_keys, counter_start: self.auth_counter, attack: self.auth_attack };
        let secure = self.dialect == Dialect::Secure;
        if secure && auth.device_keys.is_some() {
            return Err("--device-keys: not with --dialect secure (its devices prove who they are with certificates)"
                .into());
        }
        let dtls = match (secure, self.cert.is_empty()) {
            (true, true) if !self.dry_run => {
                return Err("--dialect secure needs --cert, --key and --ca (see `telemesh certs device --help`)".into())
            }
            (false, false) => return Err("--cert, --key and --ca are for --dialect secure".into()),
            (_, true) => None,
            (true, false) => {
                if self.cert.len() != self.key.len() || self.cert.len() != self.ca.len() {
                    return Err("give --cert, --key and --ca the same number of times".into());
                }
                let credentials = (self.cert.into_iter().zip(self.key).zip(self.ca))
                    .map(|((cert, key), ca)| dtls::Credentials { ca, cert, key })
                    .collect();
                Some(sensor::Dtls { credentials, handshake_timeout: self.handshake_timeout })
            }
        };
        let devices = match (self.devices, &dtls) {
            (Some(devices), _) => devices,
            // One certificate: the device it names.
            (None, Some(d)) if !d.credentials[0].per_device() => {
                let client = dtls::Context::new(&d.credentials[0], None).map_err(|e| e.to_string())?.client;
                let id = u16::try_from(client).map_err(|_| {
                    format!("--cert names client {client}; the simulator's device ids are 0..=65535")
                })?;
                vec![id]
            }
            (None, Some(_)) => return Err("--devices: which devices? (--cert has {id} in its path)".into()),
            (None, None) => vec![1001],
        };
        let config = Config {
            dialect: self.dialect,
            devices,
            interval: self.interval,
            jitter: self.jitter,
            batch: self.batch,
            timestamp_unit: self.timestamp_unit,
            start_seq: self.start_seq,
            reboot_after: self.reboot_after,
            rate: self.rate,
            count: self.count,
            duration: self.duration,
            seed: self.seed,
            start_time_ms: self.start_time_ms,
            to: self.to,
            truth: self.truth,
            dry_run: self.dry_run,
        };
        Ok((config, self.quiet, auth, dtls))
    }
}

/// The authentication options, the key file still to read.
#[derive(Debug)]
struct AuthArgs {
    device_keys: Option<PathBuf>,
    counter_start: Option<u32>,
    attack: Option<sensor::Attack>,
}

/// One line describing what is about to happen.
fn banner(config: &Config) -> String {
    let devices = match config.devices.as_slice() {
        [one] => format!("device {one}"),
        [first, .., last] => format!("{} devices ({first}..{last})", config.devices.len()),
        [] => "no devices".to_owned(),
    };
    let pace = match config.rate {
        Some(rate) => format!("{rate} packets/s round-robin"),
        None => format!("every {:?} ±{}%", config.interval, config.jitter * 100.0),
    };
    let to = match config.dry_run {
        true => "dry run".to_owned(),
        false => {
            let addrs: Vec<String> = config
                .destinations()
                .iter()
                .map(ToString::to_string)
                .collect();
            format!("to {}", addrs.join(", "))
        }
    };
    let seed = config
        .seed
        .map(|s| format!(", seed {s}"))
        .unwrap_or_default();
    format!(
        "telemesh-sensor: {} {devices}, {pace}, {to}{seed}",
        config.dialect
    )
}

fn main() -> ExitCode {
    let cli: Cli = match telemesh_tools::parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let (mut config, quiet, AuthArgs { device_keys, counter_start, attack }, dtls) = match cli.into_config() {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let keys = match device_keys.as_deref().map(sensor::load_keys).transpose() {
        Ok(keys) => keys.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let auth = sensor::Auth { keys, counter_start, attack };
    // Pick the seed here so the banner can show it and the run can be repeated.
    config.seed.get_or_insert_with(rand::random);

    let stop = match telemesh_tools::stop_flag() {
        Ok(s) => s,
        Err(code) => return code,
    };

    if !quiet {
        eprintln!("{}", banner(&config));
    }
    let result = match &dtls {
        Some(dtls) => sensor::run_secure(&config, dtls, &stop),
        None => sensor::run_with_auth(&config, &auth, &stop),
    };
    match result {
        Ok(summary) => {
            if !quiet {
                eprintln!("telemesh-sensor: {summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}
