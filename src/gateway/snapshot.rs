//! The running rules, directory and config as one value, and the pure part of the path:
//! classify, then decide. `classify` and rule tests run it without a network.

use crate::config::{Config, SplitRecipients};
use crate::directory::{Class, Directory};
use crate::marking::classify::{Classification, Classifier};
use crate::reply::Reply;
use std::time::Instant;

use crate::message::Spool;
use crate::policy::{Action, Facts, Policy, Verdict};
use crate::transaction::Transaction;

/// Everything a decision depends on, swapped as one on reload.
pub struct Snapshot {
    pub config: Config,
    pub policy: Policy,
    pub directory: Directory,
    pub classifier: Classifier,
}

impl Snapshot {
    pub fn new(config: Config, policy: Policy, directory: Directory) -> Snapshot {
        Snapshot {
            classifier: Classifier::new(&config.classifier),
            config,
            policy,
            directory,
        }
    }

    /// Whether a recipient may join a transaction whose first recipient is `first`: with
    /// `split_recipients: by_class` a transaction carries one recipient class (`cjsm`,
    /// `trusted`, `external`), so the content verdict is one class's, and a CJSM colleague
    /// never waits on (or is refused with) an external copy. `Err` is the 452 that sends
    /// the recipient round again in a transaction of its own (RFC 5321 4.5.3.1.10). Both
    /// front ends call this, so they cannot split differently.
    pub fn admit_recipient(&self, first: Option<&str>, address: &str) -> Result<(), Reply> {
        match first {
            Some(first)
                if self.config.split_recipients == SplitRecipients::ByClass
                    && self.directory.classify(first) != self.directory.classify(address) =>
            {
                Err(Reply::other_class())
            }
            _ => Ok(()),
        }
    }

    /// Classifies and decides in one go: the pure part of the path (`classify` and rule
    /// tests run it without a network).
    pub fn evaluate(&self, txn: &Transaction) -> Evaluation {
        self.decide(txn, self.classify(&txn.message))
    }

    /// Classifies the message; the slow, attacker-shaped part of the path.
    pub fn classify(&self, message: &Spool) -> Result<Classification, Unclassifiable> {
        self.classify_by(message, None)
    }

    /// Classifies, giving up (unclassifiable, so held) once `deadline` has passed: the walk
    /// checks the clock as it goes, so an abandoned classification stops using CPU.
    pub fn classify_by(
        &self,
        message: &Spool,
        deadline: Option<Instant>,
    ) -> Result<Classification, Unclassifiable> {
        self.classifier
            .classify_spool(message, deadline)
            .map_err(Unclassifiable::Classifier)
    }

    /// Applies the rules. A message that could not be classified is held, never passed.
    pub fn decide(
        &self,
        txn: &Transaction,
        classified: Result<Classification, Unclassifiable>,
    ) -> Evaluation {
        let recipients: Vec<(String, Class)> = txn
            .envelope
            .recipients
            .iter()
            .map(|r| {
                (
                    r.address().to_string(),
                    self.directory.classify(r.address()),
                )
            })
            .collect();
        match classified {
            Ok(mut classification) => {
                // Nor is the envelope sender's own history someone else's correspondence.
                let own = txn.envelope.sender_str().to_ascii_lowercase();
                classification.forwarded.retain(|f| f.from != own);
                let forwarded_from: Vec<Class> = classification
                    .forwarded
                    .iter()
                    .map(|f| self.directory.classify(&f.from))
                    .collect();
                let verdict = self.policy.decide(&Facts {
                    sender: txn.envelope.sender_str(),
                    recipients: &recipients,
                    classification: &classification,
                    size: txn.message.len(),
                    tls: txn.tls.is_some(),
                    forwarded_from: &forwarded_from,
                });
                Evaluation {
                    classification,
                    recipients,
                    forwarded_from,
                    verdict,
                }
            }
            Err(err) => {
                tracing::warn!(queue_id = %txn.id, error = %err, "unclassifiable message held");
                Evaluation {
                    classification: Classification::default(),
                    recipients,
                    forwarded_from: Vec::new(),
                    verdict: Verdict {
                        action: Action::Quarantine,
                        rule: Some("unclassifiable".to_string()),
                        reply: None,
                        add_headers: Vec::new(),
                        tags: vec!["unclassifiable".to_string()],
                        matched: Vec::new(),
                    },
                }
            }
        }
    }
}

/// Why a message could not be classified: it is held, never passed (invariant 10).
#[derive(Debug, thiserror::Error)]
pub enum Unclassifiable {
    #[error(transparent)]
    Classifier(#[from] crate::marking::classify::ClassifyError),
    #[error("classification took longer than {0:?}")]
    TookTooLong(std::time::Duration),
    #[error("classifier unavailable")]
    Unavailable,
    #[error("classifier failed: {0}")]
    Failed(String),
}

/// The outcome of classify + decide.
pub struct Evaluation {
    pub classification: Classification,
    pub recipients: Vec<(String, Class)>,
    /// The directory class of each original sender in `classification.forwarded`.
    pub forwarded_from: Vec<Class>,
    pub verdict: Verdict,
}
