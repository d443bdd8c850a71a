//! The LCLS-II DAQ shared-memory monitoring protocol (`shared/spec/shmem.md`): a [`Server`]
//! that psana2, AMI and `shmemClient` can attach to, a [`Client`] that attaches to the DAQ's
//! monitoring event builder (or to [`Server`]), and [`event_build`] for the event-built
//! datagrams such servers hand out.
//!
//! ```no_run
//! use std::time::Duration;
//! let server = shmem::Server::start(shmem::ServerConfig::new("demo"))?;
//! let mut client = shmem::Client::connect("demo", shmem::ClientOptions::default())?;
//! # let configure: Vec<u8> = Vec::new();
//! server.publish(&configure)?;
//! if let Some(shmem::Received::Dgram(d)) = client.next(Duration::from_secs(1))? {
//!     println!("{} of {} bytes", d.service().name(), d.bytes().len());
//! }
//! # Ok::<(), shmem::Error>(())
//! ```

pub mod build;
pub mod cache;
pub mod client;
pub mod error;
pub mod msg;
pub mod server;
mod signals;
pub use signals::catch_interrupt;
pub mod sys;

pub use build::{event_build, event_build_into};
pub use client::{Client, ClientOptions, ClientStats, Datagram, Received};
pub use error::{Error, Result};
pub use msg::Msg;
pub use server::{Mode, Published, Server, ServerConfig, ServerStats};
pub use xtc::StopAt;
