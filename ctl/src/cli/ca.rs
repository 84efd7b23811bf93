//! `drover ca status|rotate|refresh`: their subcommands and flags (issue
//! 18: rotating the certificate authority without a flag day). A rotation
//! has three phases, each one call: `add` (a new CA is trusted, the old one
//! still signs), `reissue` (the new one signs, the old one stays trusted
//! while identities move over) and `remove` (the old one is no longer
//! trusted).

use clap::{Subcommand, ValueEnum};
use drover_client::enroll::CaPin;

use super::Remote;
use crate::output::Format;

#[derive(Subcommand)]
pub enum CaCommand {
    /// Show the certificate authorities: the rotation's phase, where the CA
    /// keys are, who changed it last, and each CA with its state (signing,
    /// trusted, retiring), expiry, and the agents and users whose
    /// certificates it signed; then what to do next.
    ///
    /// Example: drover ca status -o wide
    Status {
        /// Output format: text, wide (whole pins), json or yaml (with each
        /// CA's certificate and the trust bundle).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Move a CA rotation on by one phase (admin): `add` a new CA, trusted
    /// beside the old one; `reissue`: the new one signs every certificate
    /// from now on, and agents and users move to it as they renew; `remove`
    /// the old one once nobody holds a certificate it signed. Each phase
    /// also brings this CLI's ca.pem up to date, and `reissue` (and
    /// `remove`, if needed) renews this CLI's own certificate from the new
    /// CA. Not retried when the answer is lost: run `drover ca status`.
    ///
    /// Example: drover ca rotate --phase add
    Rotate {
        /// The phase to go to: add, reissue or remove, in that order.
        #[arg(long, value_enum)]
        phase: PhaseArg,
        /// With --phase remove: remove the old CA even while agents or
        /// users still hold certificates it signed (they are refused from
        /// then on, and must enroll or log in again).
        #[arg(long)]
        force: bool,
        /// Output format: text, json or yaml (the status afterwards, with
        /// what changed in the TLS directory).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// Bring this CLI's TLS directory up to date with a CA rotation (any
    /// user): write the CAs to trust into its ca.pem, and renew its own
    /// certificate from the CA that signs now if another one signed it.
    /// A directory that missed the refresh after `add` no longer trusts the
    /// coordinators once they serve a certificate of the new CA
    /// (`reissue`): give --ca-pin with the new CA's pin.
    ///
    /// Example: drover ca refresh
    ///
    /// Example: drover ca refresh --ca-pin sha256:0b2c4d6e8f10121416181a1c1e20222426282a2c2e30323436383a3c3e404244
    Refresh {
        /// The pin of the CA that signs now, sha256: and 64 lower-case hex
        /// digits, as `drover ca status -o wide` shows it on a CLI that
        /// works (or the admin gives it): trust a coordinator only if it
        /// presents this CA, instead of through ca.pem; this CLI's own
        /// certificate is presented as always (the coordinators accept the
        /// old CA's until `drover ca rotate --phase remove`).
        #[arg(long, value_name = "sha256:HEX", value_parser = CaPin::parse)]
        ca_pin: Option<CaPin>,
        /// Output format: text, json or yaml (the status, with what changed
        /// in the TLS directory).
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        remote: Remote,
    },
}

impl CaCommand {
    pub fn remote(&self) -> &Remote {
        match self {
            CaCommand::Status { remote, .. } | CaCommand::Rotate { remote, .. } | CaCommand::Refresh { remote, .. } => {
                remote
            }
        }
    }
}

/// A CA rotation's phase, as `--phase` takes it.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseArg {
    /// Make a new CA and trust it beside the old one, which still signs.
    Add,
    /// Have the new CA sign every certificate; the old one stays trusted.
    Reissue,
    /// Stop trusting the old CA.
    Remove,
}

impl PhaseArg {
    /// The word the coordinator takes (`RotateCaRequest.phase`).
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseArg::Add => "add",
            PhaseArg::Reissue => "reissue",
            PhaseArg::Remove => "remove",
        }
    }
}
