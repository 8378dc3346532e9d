//! The running rules, directory and config as one value, and the pure part of the path:
//! classify, then decide. `classify` and rule tests run it without a network.

use crate::config::Config;
use crate::directory::{Class, Directory};
use crate::marking::classify::{Classification, Classifier};
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
            Ok(classification) => {
                let verdict = self.policy.decide(&Facts {
                    sender: txn.envelope.sender_str(),
                    recipients: &recipients,
                    classification: &classification,
                    size: txn.message.len(),
                    tls: txn.tls.is_some(),
                });
                Evaluation {
                    classification,
                    recipients,
                    verdict,
                }
            }
            Err(err) => {
                tracing::warn!(queue_id = %txn.id, error = %err, "unclassifiable message held");
                Evaluation {
                    classification: Classification::default(),
                    recipients,
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
    pub verdict: Verdict,
}
