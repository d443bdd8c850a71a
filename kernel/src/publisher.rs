//! What the kernel sends to the frontend: iopub publications (in order, through one queue),
//! shell replies and stdin input requests. Every part of the kernel sends through a clone.

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::transport::Message;

/// An input request and where its answer goes (`None`: the frontend went away).
pub type InputRequest = (Message, oneshot::Sender<Option<String>>);

/// The queues the socket tasks drain: iopub, shell replies, stdin requests.
pub struct Queues {
    pub iopub: mpsc::UnboundedReceiver<Message>,
    pub shell: mpsc::UnboundedReceiver<Message>,
    pub stdin: mpsc::UnboundedReceiver<InputRequest>,
}

#[derive(Clone)]
pub struct Publisher {
    pub session: String,
    iopub: mpsc::UnboundedSender<Message>,
    shell: mpsc::UnboundedSender<Message>,
    stdin: mpsc::UnboundedSender<InputRequest>,
}

impl Publisher {
    /// A publisher for `session` and the queues its messages wait in.
    pub fn new(session: &str) -> (Publisher, Queues) {
        let (iopub_tx, iopub) = mpsc::unbounded_channel();
        let (shell_tx, shell) = mpsc::unbounded_channel();
        let (stdin_tx, stdin) = mpsc::unbounded_channel();
        (Publisher { session: session.into(), iopub: iopub_tx, shell: shell_tx, stdin: stdin_tx }, Queues { iopub, shell, stdin })
    }

    /// Publishes on iopub, parented to `parent` (or to nothing).
    pub fn publish(&self, parent: Option<&Message>, msg_type: &str, content: Value) {
        let mut m = Message::new(&self.session, msg_type, content);
        m.parent_header = parent.map(|p| p.header.clone());
        self.publish_message(m);
    }

    pub fn publish_message(&self, m: Message) {
        let _ = self.iopub.send(m);
    }

    pub fn status(&self, parent: &Message, state: &str) {
        self.publish(Some(parent), "status", json!({"execution_state": state}));
    }

    /// Replies on shell to `parent`.
    pub fn shell_reply(&self, parent: &Message, msg_type: &str, content: Value) {
        let _ = self.shell.send(Message::reply_to(parent, &self.session, msg_type, content));
    }

    /// Asks the frontend for input (stdin channel) and waits for it; `None` if the frontend
    /// went away.
    pub fn input(&self, parent: &Message, prompt: &str, password: bool) -> Option<String> {
        let (tx, rx) = oneshot::channel();
        let req = Message::reply_to(parent, &self.session, "input_request", json!({"prompt": prompt, "password": password}));
        self.stdin.send((req, tx)).ok()?;
        rx.blocking_recv().ok().flatten()
    }
}
