//! The driver's end: a ROUTER on a TCP port that the job's rank 0 connects to — on loopback
//! when the ranks run on this host, on this host's address when a launcher may place rank 0
//! on another node (Slurm, a hostfile). Jobs may come and go (restart); commands go to the
//! newest one that said hello.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::messages::encode_command;
use crate::{Command, ContractError, JobMessage};

pub struct JobEndpoint {
    endpoint: String,
    messages: mpsc::Receiver<Result<JobMessage, ContractError>>,
    commands: UnboundedSender<Command>,
}

/// The address to listen on: `$BEAMTIME_LINK_ADDRESS` (an address, a host name, or `auto`
/// for this host's first non-loopback IPv4 address) when set; else that `auto` address when
/// the job's rank 0 may run on another host, loopback otherwise.
pub fn link_address(remote_ranks: bool) -> Result<String, ContractError> {
    let chosen = std::env::var("BEAMTIME_LINK_ADDRESS").ok().filter(|a| !a.is_empty());
    match chosen.as_deref() {
        Some("auto") => Ok(this_host_address()),
        Some(a) => {
            use std::net::ToSocketAddrs;
            let ip = (a, 0).to_socket_addrs().ok().and_then(|mut it| it.find(|s| s.is_ipv4())).map(|s| s.ip().to_string());
            ip.ok_or_else(|| ContractError::Link(format!("BEAMTIME_LINK_ADDRESS={a}: not an address or a host name this host can resolve")))
        }
        None if remote_ranks => Ok(this_host_address()),
        None => Ok("127.0.0.1".into()),
    }
}

/// This host's first non-loopback IPv4 address that is up (loopback when it has none).
pub fn this_host_address() -> String {
    let mut found = None;
    // SAFETY: getifaddrs fills a list that is read here and freed with freeifaddrs.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) == 0 {
            let mut at = list;
            while !at.is_null() && found.is_none() {
                let ifa = &*at;
                let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0 && ifa.ifa_flags & libc::IFF_LOOPBACK as u32 == 0;
                if up && !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    found = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).to_string());
                }
                at = ifa.ifa_next;
            }
            libc::freeifaddrs(list);
        }
    }
    found.unwrap_or_else(|| "127.0.0.1".into())
}

impl JobEndpoint {
    /// Listens on loopback: for jobs whose ranks run on this host.
    pub fn bind() -> Result<JobEndpoint, ContractError> {
        Self::bind_for(false)
    }

    /// Listens where a job's rank 0 can reach it ([`link_address`]).
    pub fn bind_for(remote_ranks: bool) -> Result<JobEndpoint, ContractError> {
        Self::bind_on(&link_address(remote_ranks)?)
    }

    /// Listens on `address` (an IPv4 address of this host), on a free port.
    pub fn bind_on(address: &str) -> Result<JobEndpoint, ContractError> {
        let at = format!("tcp://{address}:0");
        let failed = |e: &dyn std::fmt::Display| ContractError::Link(format!("cannot bind the job endpoint: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| failed(&e))?;
        let (msg_tx, messages) = mpsc::channel();
        let (commands, mut cmd_rx) = unbounded_channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("job-endpoint".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut sock = zeromq::RouterSocket::new();
                    let endpoint = match sock.bind(&at).await {
                        Ok(e) => e.to_string(),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(endpoint));
                    let mut peer: Option<Bytes> = None;
                    loop {
                        tokio::select! {
                            c = cmd_rx.recv() => {
                                let Some(c) = c else { break };
                                let Some(id) = peer.clone() else { continue };
                                let parts = vec![id, Bytes::from(encode_command(&c))];
                                let _ = sock.send(ZmqMessage::try_from(parts).expect("two parts")).await;
                            }
                            z = sock.recv() => {
                                let Ok(z) = z else { break };
                                let mut parts = z.into_vec();
                                if parts.is_empty() {
                                    continue;
                                }
                                let id = parts.remove(0);
                                let m = JobMessage::decode(&parts);
                                if matches!(m, Ok(JobMessage::Hello(_))) {
                                    peer = Some(id);
                                }
                                if msg_tx.send(m).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            })
            .map_err(|e| failed(&e))?;
        let endpoint = ready_rx.recv().map_err(|_| failed(&"the endpoint thread ended"))?.map_err(|e| failed(&e))?;
        Ok(JobEndpoint { endpoint, messages, commands })
    }

    /// `tcp://<address>:<port>`: what the job's [`crate::JobSpec::connect`] names.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next message, or what was wrong with it (another contract version, a bad header);
    /// None when nothing came within `wait`.
    pub fn recv_timeout(&self, wait: Duration) -> Option<Result<JobMessage, ContractError>> {
        self.messages.recv_timeout(wait).ok()
    }

    pub fn send(&self, cmd: Command) {
        let _ = self.commands.send(cmd);
    }

    /// A handle that sends commands from another thread.
    pub fn commander(&self) -> UnboundedSender<Command> {
        self.commands.clone()
    }
}
