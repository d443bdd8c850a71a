//! The driver's end: a ROUTER on a loopback port that the job's rank 0 connects to. Jobs may
//! come and go (restart); commands go to the newest one that said hello.

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

impl JobEndpoint {
    pub fn bind() -> Result<JobEndpoint, ContractError> {
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
                    let endpoint = match sock.bind("tcp://127.0.0.1:0").await {
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

    /// `tcp://127.0.0.1:<port>`: what the job's [`crate::JobSpec::connect`] names.
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
