//! The identity services: `EnrollService` (the one call served without a
//! client certificate), `AgentCertService` (an enrolled agent renewing its
//! certificate) and `IdentityService` (admins: join tokens, agents' access,
//! the audit log). The work is `crate::identity`'s and `crate::audit`'s.

use std::sync::Arc;

use drover_pki::enroll::Signed;
use drover_proto::v1 as pb;
use drover_telemetry::trace::now_ms;

fn now() -> i64 {
    now_ms() as i64
}
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::status::ApiError;
use super::{allowed, presented};
use crate::audit;
use crate::core::authz::{Action, Area};
use crate::core::authz::{Caller, Role};
use crate::core::identity::{IdentityRecord, TokenRecord, UserRecord};
use crate::identity::{self, Access, Gate, Signing};
use crate::store::Store;

/// How many enrollments one coordinator signs at once; more are refused
/// with RESOURCE_EXHAUSTED (retry shortly), so an unauthenticated caller
/// cannot keep the CA busy.
pub const MAX_CONCURRENT_ENROLLMENTS: usize = 8;
/// How many renewals one coordinator signs at once; more wait their turn
/// (a reissue asks every agent to renew within half a minute), so that a
/// burst leaves the scheduler its share of the store and the cores.
pub const MAX_CONCURRENT_RENEWALS: usize = 4;
/// The largest CSR read.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// What the three services share.
#[derive(Clone)]
pub struct IdentityApi {
    pub store: Arc<dyn Store>,
    pub signing: Signing,
    pub gate: Arc<Gate>,
    pub enrolling: Arc<Semaphore>,
    /// Renewals in progress (see [`MAX_CONCURRENT_RENEWALS`]).
    pub renewing: Arc<Semaphore>,
    /// Refused enrollments audited once a minute per address.
    pub refusals: Arc<crate::audit::Throttle>,
    /// The web UI this coordinator serves (`--ui-listen`), for
    /// `CreateUiLogin`'s links; none: no UI.
    pub ui: Option<crate::ui::Links>,
}

impl IdentityApi {
    pub fn new(store: Arc<dyn Store>, signing: Signing, gate: Arc<Gate>) -> Self {
        IdentityApi {
            store,
            signing,
            gate,
            enrolling: Arc::new(Semaphore::new(MAX_CONCURRENT_ENROLLMENTS)),
            renewing: Arc::new(Semaphore::new(MAX_CONCURRENT_RENEWALS)),
            refusals: Arc::default(),
            ui: None,
        }
    }

    /// A certificate signed, with every CA to trust (the signing one
    /// first, which is the one an enrolling agent's --ca-pin names).
    fn certificate(&self, identity: &IdentityRecord, signed: Signed) -> pb::AgentCertificate {
        pb::AgentCertificate {
            name: identity.name.clone(),
            certificate_pem: signed.pem,
            ca_pem: self.signing.keyring.trust().bundle(),
            not_after_ms: signed.not_after_ms,
            renew_at_ms: identity.renew_at_ms(),
        }
    }

    fn pin(&self) -> Result<String, ApiError> {
        Ok(self.signing.authority().map_err(ApiError::from)?.pin().to_owned())
    }

    /// `drover ca status`: the CAs, and who holds a certificate of each.
    async fn ca_status(&self) -> Result<pb::CaStatusResponse, ApiError> {
        let keyring = &self.signing.keyring;
        let trust = keyring.trust();
        let holders = identity::ca::holders(self.store.as_ref(), trust.original_pin(), now()).await?;
        let cas = trust
            .cas
            .iter()
            .map(|ca| pb::CertAuthority {
                pin: ca.cert.pin.clone(),
                name: ca.cert.name.clone(),
                state: ca.state.as_str().to_owned(),
                not_after_ms: ca.cert.not_after_ms,
                agents: holders.agents.get(&ca.cert.pin).copied().unwrap_or(0),
                users: holders.users.get(&ca.cert.pin).copied().unwrap_or(0),
                connected: keyring.connected_to(&ca.cert) as u32,
                cert_pem: ca.cert.pem.clone(),
            })
            .collect();
        let (changed_by, changed_ms) =
            trust.ring.as_ref().map_or((String::new(), 0), |r| (r.changed_by.clone(), r.changed_ms));
        Ok(pb::CaStatusResponse {
            phase: trust.phase().as_str().to_owned(),
            cas,
            trust_pem: trust.bundle(),
            changed_by,
            changed_ms,
            keys_in: if trust.ring.is_some() { "store" } else { "files" }.to_owned(),
        })
    }
}

fn check_csr_size(csr: &[u8]) -> Result<(), ApiError> {
    if csr.is_empty() || csr.len() > MAX_CSR_BYTES {
        return Err(ApiError::Invalid(format!(
            "the certificate signing request is {} bytes; it must be 1 to {MAX_CSR_BYTES}",
            csr.len()
        )));
    }
    Ok(())
}

fn user_view(name: &str, u: &UserRecord) -> pb::User {
    pb::User {
        name: name.to_owned(),
        role: u.role.as_str().to_owned(),
        created_by: u.created_by.clone(),
        created_ms: u.created_ms,
        updated_by: u.updated_by.clone(),
        updated_ms: u.updated_ms,
        serial: u.serial.clone(),
        not_after_ms: u.not_after_ms,
    }
}

fn token_view(id: &str, t: &TokenRecord, now: i64) -> pb::AgentToken {
    let (ended_ms, ended_by) = t.ended();
    pb::AgentToken {
        id: id.to_owned(),
        name: t.name.clone(),
        labels: t.labels.clone().into_iter().collect(),
        created_by: t.created_by.clone(),
        created_ms: t.created_ms,
        expires_ms: t.expires_ms,
        state: t.state(now).as_str().to_owned(),
        ended_ms,
        ended_by: ended_by.to_owned(),
    }
}

#[tonic::async_trait]
impl pb::enroll_service_server::EnrollService for IdentityApi {
    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::AgentCertificate>, Status> {
        let Ok(_permit) = self.enrolling.try_acquire() else {
            return Err(ApiError::Busy(format!(
                "{MAX_CONCURRENT_ENROLLMENTS} enrollments are under way on this coordinator; retry shortly"
            ))
            .into());
        };
        let source = req.remote_addr();
        let r = req.into_inner();
        check_csr_size(&r.csr)?;
        let (identity, signed) =
            identity::enroll(self.store.as_ref(), (&self.signing, &self.refusals), &r.token, &r.csr, source, now())
                .await
                .map_err(ApiError::from)?;
        Ok(Response::new(self.certificate(&identity, signed)))
    }
}

#[tonic::async_trait]
impl pb::agent_cert_service_server::AgentCertService for IdentityApi {
    async fn renew(&self, req: Request<pb::RenewRequest>) -> Result<Response<pb::AgentCertificate>, Status> {
        let (name, cert) = presented(&req)?;
        let source = req.remote_addr();
        let csr = req.into_inner().csr;
        check_csr_size(&csr)?;
        let _turn = self.renewing.acquire().await.map_err(|_| ApiError::ShuttingDown)?;
        let (identity, signed) =
            identity::renew(self.store.as_ref(), &self.signing, &name, &cert.serial, &csr, source, now())
                .await
                .map_err(ApiError::from)?;
        Ok(Response::new(self.certificate(&identity, signed)))
    }
}

#[tonic::async_trait]
impl pb::identity_service_server::IdentityService for IdentityApi {
    async fn create_agent_token(
        &self,
        req: Request<pb::CreateAgentTokenRequest>,
    ) -> Result<Response<pb::CreateAgentTokenResponse>, Status> {
        let by = super::authorize(&req, Action::Administer(Area::Agents))?.actor();
        let ca_pin = self.pin()?;
        let source = req.remote_addr();
        let r = req.into_inner();
        let ttl = (r.ttl_ms > 0).then(|| std::time::Duration::from_millis(r.ttl_ms));
        let now = now();
        let labels = r.labels.into_iter().collect();
        let (token, record) = identity::create_token(self.store.as_ref(), &r.name, labels, ttl, &by, source, now)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::CreateAgentTokenResponse {
            token: Some(token_view(&token.id, &record, now)),
            secret: token.text(),
            ca_pin,
        }))
    }

    async fn list_agent_tokens(
        &self,
        req: Request<pb::ListAgentTokensRequest>,
    ) -> Result<Response<pb::ListAgentTokensResponse>, Status> {
        allowed(&req, Action::Administer(Area::Agents))?;
        let now = now();
        let tokens = identity::list_tokens(self.store.as_ref()).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListAgentTokensResponse {
            tokens: tokens.iter().map(|(id, t)| token_view(id, t, now)).collect(),
        }))
    }

    async fn revoke_agent_token(
        &self,
        req: Request<pb::RevokeAgentTokenRequest>,
    ) -> Result<Response<pb::AgentToken>, Status> {
        let by = super::authorize(&req, Action::Administer(Area::Agents))?.actor();
        let source = req.remote_addr();
        let id = req.into_inner().id;
        let now = now();
        let t = identity::revoke_token(self.store.as_ref(), &id, &by, source, now).await.map_err(ApiError::from)?;
        Ok(Response::new(token_view(&id, &t, now)))
    }

    async fn set_agent_access(
        &self,
        req: Request<pb::SetAgentAccessRequest>,
    ) -> Result<Response<pb::AgentAccess>, Status> {
        let by = super::authorize(&req, Action::Administer(Area::Agents))?.actor();
        let source = req.remote_addr();
        let r = req.into_inner();
        let access = Access::parse(&r.action).map_err(ApiError::from)?;
        let now = now();
        let denial = identity::set_access(self.store.as_ref(), &r.name, access, &by, source, now)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::AgentAccess {
            name: r.name,
            state: denial.as_ref().map_or("allowed", |d| d.state()).to_owned(),
            by,
            at_ms: now,
        }))
    }

    async fn list_agent_identities(
        &self,
        req: Request<pb::ListAgentIdentitiesRequest>,
    ) -> Result<Response<pb::ListAgentIdentitiesResponse>, Status> {
        allowed(&req, Action::Administer(Area::Agents))?;
        let all = identity::list_identities(self.store.as_ref()).await.map_err(ApiError::from)?;
        let identities = all
            .into_iter()
            .map(|(name, (identity, denial))| {
                let state = denial.as_ref().map_or("allowed", |d| d.state()).to_owned();
                match identity {
                    Some(i) => pb::AgentIdentity {
                        name,
                        labels: i.labels.into_iter().collect(),
                        serial: i.serial,
                        not_after_ms: i.not_after_ms,
                        issued_ms: i.not_before_ms,
                        enrolled_ms: i.enrolled_ms,
                        renewals: i.renewals,
                        state,
                    },
                    None => pb::AgentIdentity { name, state, ..Default::default() },
                }
            })
            .collect();
        Ok(Response::new(pb::ListAgentIdentitiesResponse { identities }))
    }

    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        allowed(&req, Action::Administer(Area::Audit))?;
        let r = req.into_inner();
        let entries = audit::list(self.store.as_ref(), r.since_ms, &r.actor, r.limit as usize, now())
            .await
            .map_err(ApiError::from)?;
        let entries = entries
            .into_iter()
            .map(|e| pb::AuditEntry {
                at_ms: e.at_ms,
                actor: e.actor,
                source: e.source,
                action: e.action,
                target: e.target,
                outcome: e.outcome,
                level: e.level,
                detail: e.detail,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { entries }))
    }

    async fn add_user(&self, req: Request<pb::AddUserRequest>) -> Result<Response<pb::AddUserResponse>, Status> {
        let by = super::authorize(&req, Action::Administer(Area::Users))?.actor();
        let ca_pin = self.pin()?;
        let source = req.remote_addr();
        let r = req.into_inner();
        let role = Role::parse(&r.role).map_err(ApiError::Invalid)?;
        let ttl = (r.ttl_ms > 0).then(|| std::time::Duration::from_millis(r.ttl_ms));
        let (user, token, _) = identity::users::add_user(self.store.as_ref(), &r.name, role, ttl, (&by, source), now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::AddUserResponse {
            user: Some(user_view(&r.name, &user)),
            secret: token.text(),
            token_id: token.id,
            ca_pin,
        }))
    }

    async fn set_user_role(&self, req: Request<pb::SetUserRoleRequest>) -> Result<Response<pb::User>, Status> {
        let by = super::authorize(&req, Action::Administer(Area::Users))?.actor();
        let source = req.remote_addr();
        let r = req.into_inner();
        let role = Role::parse(&r.role).map_err(ApiError::Invalid)?;
        let user = identity::users::set_role(self.store.as_ref(), &r.name, role, (&by, source), now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(user_view(&r.name, &user)))
    }

    async fn remove_user(&self, req: Request<pb::RemoveUserRequest>) -> Result<Response<pb::User>, Status> {
        let by = super::authorize(&req, Action::Administer(Area::Users))?.actor();
        let source = req.remote_addr();
        let name = req.into_inner().name;
        let user =
            identity::users::remove(self.store.as_ref(), &name, (&by, source), now()).await.map_err(ApiError::from)?;
        Ok(Response::new(user_view(&name, &user)))
    }

    async fn list_users(&self, req: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        super::authorize(&req, Action::Administer(Area::Users))?;
        let users = identity::users::list(self.store.as_ref()).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListUsersResponse { users: users.iter().map(|(n, u)| user_view(n, u)).collect() }))
    }

    async fn ca_status(&self, req: Request<pb::CaStatusRequest>) -> Result<Response<pb::CaStatusResponse>, Status> {
        allowed(&req, Action::Read)?;
        Ok(Response::new(IdentityApi::ca_status(self).await?))
    }

    async fn rotate_ca(&self, req: Request<pb::RotateCaRequest>) -> Result<Response<pb::CaStatusResponse>, Status> {
        let by = super::authorize(&req, Action::Administer(Area::Ca))?.actor();
        let source = req.remote_addr();
        let r = req.into_inner();
        self.signing
            .keyring
            .rotate(self.store.as_ref(), &r.phase, r.force, (&by, source), now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(IdentityApi::ca_status(self).await?))
    }

    async fn renew_own(&self, req: Request<pb::RenewRequest>) -> Result<Response<pb::AgentCertificate>, Status> {
        let caller = super::authorize(&req, Action::RenewOwn)?;
        let cert = super::certificate(&req)?;
        let name = caller.name().to_owned();
        let source = req.remote_addr();
        let csr = req.into_inner().csr;
        check_csr_size(&csr)?;
        let store = self.store.as_ref();
        let signed = match caller {
            Caller::User { .. } => {
                identity::users::renew_user(store, &self.signing, &name, &cert.serial, &csr, source, now()).await
            }
            Caller::Admin(_) => {
                identity::users::renew_admin(store, &self.signing, &name, cert.not_after_ms, &csr, source, now()).await
            }
            Caller::Agent(_) | Caller::Other { .. } => {
                return Err(ApiError::PermissionDenied(
                    "only users and administrators renew their own certificates here; agents renew over their session"
                        .into(),
                )
                .into());
            }
        }
        .map_err(ApiError::from)?;
        Ok(Response::new(pb::AgentCertificate {
            name,
            not_after_ms: signed.not_after_ms,
            renew_at_ms: now() + (signed.not_after_ms - now()) / 2,
            certificate_pem: signed.pem,
            ca_pem: self.signing.keyring.trust().bundle(),
        }))
    }

    async fn create_ui_login(
        &self,
        req: Request<pb::CreateUiLoginRequest>,
    ) -> Result<Response<pb::CreateUiLoginResponse>, Status> {
        use crate::ui::session::{self, Holder, SessionError};
        let caller = super::authorize(&req, Action::WhoAmI)?;
        let cert = super::certificate(&req)?;
        let Some(ui) = &self.ui else {
            return Err(ApiError::Precondition(
                "this coordinator serves no web UI: start it with --ui-listen ADDR (`drover dev` does)".into(),
            )
            .into());
        };
        let holder = match caller {
            Caller::Admin(name) => Holder { name, admin: true, serial: cert.serial },
            Caller::User { name, .. } => Holder { name, admin: false, serial: cert.serial },
            Caller::Agent(_) | Caller::Other { .. } => {
                return Err(
                    ApiError::PermissionDenied("only users and administrators log in to the web UI".into()).into()
                );
            }
        };
        let source = req.remote_addr();
        let next = req.into_inner().next;
        let (secret, grant) =
            session::create_login(self.store.as_ref(), holder, &next, now()).await.map_err(|e| match e {
                SessionError::Store(e) => ApiError::Store(e),
                other => ApiError::Invalid(other.to_string()),
            })?;
        let actor = format!("{}:{}", if grant.holder.admin { "admin" } else { "user" }, grant.holder.name);
        let entry = audit::Entry::ok(now(), &actor, "ui.link", "").source(source);
        audit::record(self.store.as_ref(), entry).await;
        Ok(Response::new(pb::CreateUiLoginResponse {
            url: format!("{}/login/{secret}", ui.url),
            expires_ms: grant.expires_ms,
            session_ttl_ms: ui.session_ttl.as_millis() as u64,
        }))
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = req
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::PermissionDenied("the caller is not known".into()))?;
        let kind = match &caller {
            Caller::Admin(_) => "admin",
            Caller::User { .. } => "user",
            Caller::Agent(_) => "agent",
            Caller::Other { .. } => "unknown",
        };
        let role = caller.role();
        let may = match (&caller, role) {
            (_, Some(role)) => role.may().to_owned(),
            (Caller::User { role: Err(why), .. }, None) => format!("nothing: {why}"),
            _ => "nothing on the control API".to_owned(),
        };
        Ok(Response::new(pb::WhoAmIResponse {
            kind: kind.to_owned(),
            name: caller.name().to_owned(),
            role: role.map(|r| r.as_str().to_owned()).unwrap_or_default(),
            may,
        }))
    }
}
