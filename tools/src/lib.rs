//! telemesh tools. `sensor` is the simulator behind the `telemesh-sensor` binary, kept as
//! a library so that integration tests and the testnet can drive it in-process.

pub mod sensor;
