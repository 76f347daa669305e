//! `/v1/customers`: look-up, GDPR export and erasure, unlinking a wrong identity, resolving an
//! intent outside a call.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use serde_json::Value;
use sticky_core::domain::{CustomerRef, ExternalId, IntentName, PhoneNumber};
use sticky_core::engine::{CustomerExport, CustomerSummary, IntentRecord};

use super::ApiTags;
use super::shared::CallDto;
use crate::auth::ApiKeyAuth;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::AppState;
use sticky_core::keys::Scope;

/// A customer in a look-up.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct CustomerSummaryDto {
    /// Reference.
    pub customer_ref: String,
    /// Created from a number alone and not yet named by an end.
    pub provisional: bool,
    /// Ended calls linked to the customer.
    pub call_count: i64,
    /// First call.
    #[oai(nullable)]
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest call.
    #[oai(nullable)]
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl From<CustomerSummary> for CustomerSummaryDto {
    fn from(c: CustomerSummary) -> Self {
        Self {
            customer_ref: c.customer_ref,
            provisional: c.provisional,
            call_count: c.call_count,
            first_seen_at: c.first_seen_at,
            last_seen_at: c.last_seen_at,
        }
    }
}

/// Customers: those linked to the given identity, most recently seen first, or a page of
/// all of them in `customer_ref` order.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct CustomerListDto {
    /// The customers (at most `limit`).
    pub customers: Vec<CustomerSummaryDto>,
    /// When listing without `ani` or `external_id` and more customers follow: the `after` that
    /// asks for the next page.
    #[oai(nullable)]
    pub next_after: Option<String>,
}

/// An identity linked to a customer.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct IdentityDto {
    /// `ani` or `external_id`.
    pub kind: String,
    /// E.164 number, or `name:value`.
    pub value: String,
    /// Ended calls that carried it.
    pub call_count: i64,
    /// First seen.
    pub first_seen_at: DateTime<Utc>,
    /// Last seen.
    pub last_seen_at: DateTime<Utc>,
}

/// An intent of a customer.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct IntentDto {
    /// Name.
    pub intent: String,
    /// `open` or `resolved`.
    pub status: String,
    /// When (re)opened.
    pub opened_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When resolved.
    #[oai(nullable)]
    pub resolved_at: Option<DateTime<Utc>>,
    /// The last call that touched it.
    #[oai(nullable)]
    pub last_call_id: Option<String>,
    /// When a promised callback is due (only for callbacks).
    #[oai(skip_serializing_if_is_none)]
    pub due_at: Option<DateTime<Utc>>,
}

impl From<IntentRecord> for IntentDto {
    fn from(i: IntentRecord) -> Self {
        Self {
            intent: i.intent,
            status: i.status,
            opened_at: i.opened_at,
            updated_at: i.updated_at,
            resolved_at: i.resolved_at,
            last_call_id: i.last_call_id,
            due_at: i.due_at,
        }
    }
}

/// Everything stored about a customer (the GDPR export).
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct CustomerExportDto {
    /// Reference.
    pub customer_ref: String,
    /// Created from a number alone and not yet named.
    pub provisional: bool,
    /// Ended calls linked to the customer.
    pub call_count: i64,
    /// First call.
    #[oai(nullable)]
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest call.
    #[oai(nullable)]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When the record was created.
    pub created_at: DateTime<Utc>,
    /// Linked identities.
    pub identities: Vec<IdentityDto>,
    /// Saved variables.
    pub variables: BTreeMap<String, Value>,
    /// Intents, open and resolved.
    pub intents: Vec<IntentDto>,
    /// Calls linked or matched to the customer, oldest first.
    pub calls: Vec<CallDto>,
}

impl From<CustomerExport> for CustomerExportDto {
    fn from(e: CustomerExport) -> Self {
        Self {
            customer_ref: e.customer.customer_ref,
            provisional: e.customer.provisional,
            call_count: e.customer.call_count,
            first_seen_at: e.customer.first_seen_at,
            last_seen_at: e.customer.last_seen_at,
            created_at: e.created_at,
            identities: e
                .identities
                .into_iter()
                .map(|i| IdentityDto {
                    kind: i.kind,
                    value: i.value,
                    call_count: i.call_count,
                    first_seen_at: i.first_seen_at,
                    last_seen_at: i.last_seen_at,
                })
                .collect(),
            variables: e.variables,
            intents: e.intents.into_iter().map(Into::into).collect(),
            calls: e.calls.into_iter().map(Into::into).collect(),
        }
    }
}

/// Rows removed per kind.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct DeletedCountsDto {
    /// The customer row.
    pub customers: u64,
    /// Identity links.
    pub identities: u64,
    /// Saved variables.
    pub variables: u64,
    /// Intents.
    pub intents: u64,
    /// Calls.
    pub calls: u64,
}

/// The erasure's result.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct ErasureDto {
    /// The erased reference.
    pub customer_ref: String,
    /// Rows removed.
    pub deleted: DeletedCountsDto,
}

/// What an erasure by number removed.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct NumberErasureDto {
    /// Rows removed: the calls from the number, its identity links, and the provisional
    /// customers known only through it (with their variables, intents and calls).
    pub deleted: DeletedCountsDto,
}

#[derive(ApiResponse)]
enum EraseNumberResponse {
    /// Erased (all counts 0 when nothing was kept for the number).
    #[oai(status = 200)]
    Ok(Json<NumberErasureDto>),
}

/// The identity to unlink: exactly one of `ani` or `external_id`.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(deny_unknown_fields)]
pub struct UnlinkRequest {
    /// A caller number, in any form `identity_hints.ani` accepts.
    #[oai(nullable)]
    pub ani: Option<String>,
    /// An external id, `name:value`.
    #[oai(nullable)]
    pub external_id: Option<String>,
}

/// What was unlinked.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "snake_case")]
pub struct UnlinkResponse {
    /// Identity links removed.
    pub removed: u64,
}

#[derive(ApiResponse)]
enum ListResponse {
    /// Matching customers (possibly none).
    #[oai(status = 200)]
    Ok(Json<CustomerListDto>),
}

#[derive(ApiResponse)]
enum ExportResponse {
    /// Everything stored about the customer.
    #[oai(status = 200)]
    Ok(Json<CustomerExportDto>),
}

#[derive(ApiResponse)]
enum EraseResponse {
    /// Erased.
    #[oai(status = 200)]
    Ok(Json<ErasureDto>),
}

#[derive(ApiResponse)]
enum UnlinkResult {
    /// Unlinked.
    #[oai(status = 200)]
    Ok(Json<UnlinkResponse>),
}

#[derive(ApiResponse)]
enum ResolveResponse {
    /// The intent, now resolved.
    #[oai(status = 200)]
    Ok(Json<IntentDto>),
}

fn parse_ref(raw: &str) -> Result<CustomerRef, ApiError> {
    CustomerRef::parse(raw).map_err(|e| ApiError::invalid("customer_ref", e.0))
}

/// Parses the one identity of a look-up or an unlink.
/// A number, an external id, or both, as a request names an identity.
type Identity = (Option<PhoneNumber>, Option<ExternalId>);

fn parse_identity(
    region: sticky_core::domain::DefaultRegion,
    ani: Option<&str>,
    external_id: Option<&str>,
    require_one: bool,
) -> Result<Option<Identity>, ApiError> {
    if ani.is_none() && external_id.is_none() {
        return Err(ApiError::invalid(
            "ani",
            "give `ani` or `external_id` (name:value)",
        ));
    }
    if require_one && ani.is_some() && external_id.is_some() {
        return Err(ApiError::invalid(
            "external_id",
            "give either `ani` or `external_id`, not both",
        ));
    }
    // A number that is not a usable phone number can be no one's (`None`): the callers
    // answer as for a number nobody has (an empty look-up, nothing erased, no such identity).
    let ani = match ani.map(|a| PhoneNumber::parse(a, region)) {
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Ok(None),
        None => None,
    };
    let external_id = external_id
        .map(|e| ExternalId::parse_pair(e).map_err(|err| ApiError::invalid("external_id", err.0)))
        .transpose()?;
    Ok(Some((ani, external_id)))
}

/// An erasure's counts, for the audit trail.
pub fn counts(r: &sticky_core::engine::ErasureReport) -> serde_json::Value {
    serde_json::json!({
        "customers": r.customers, "identities": r.identities, "variables": r.variables,
        "intents": r.intents, "calls": r.calls,
    })
}

/// The most customers one answer lists.
const MAX_PAGE: u64 = 100;

/// Customer endpoints.
pub struct CustomersApi {
    /// Shared state.
    pub state: Arc<AppState>,
}

#[OpenApi(prefix_path = "/v1/customers", tag = "ApiTags::Customers")]
impl CustomersApi {
    /// Look customers up by number or external id without starting a call, or list them all.
    ///
    /// With `ani` or `external_id` (or both): the customers linked to either, most recently
    /// seen first. With neither: every customer of the tenant, in `customer_ref` order, a page
    /// at a time (`next_after` asks for the next one). `limit` caps the answer in both cases;
    /// `after` keeps only customers whose reference sorts after it.
    #[oai(path = "/", method = "get", operation_id = "find_customers")]
    async fn find(
        &self,
        auth: ApiKeyAuth,
        /// A caller number in any common form.
        #[oai(validator(min_length = 1))]
        ani: Query<Option<String>>,
        /// An external id, `name:value` (`crm_id:crm_12345`).
        #[oai(validator(pattern = r"^[A-Za-z0-9_.-]{1,64}:[^\x00-\x1F\x7F-\x9F]{1,256}$"))]
        external_id: Query<Option<String>>,
        /// At most this many customers (1 to 100, default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u64>>,
        /// Only customers whose reference sorts after this one (the previous page's
        /// `next_after`).
        #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:@+-]+$"))]
        after: Query<Option<String>>,
    ) -> Result<ListResponse, ApiError> {
        auth.with(Scope::CustomersRead)?;
        let limit = limit.0.unwrap_or(MAX_PAGE);
        let after = after.0;
        crate::limits::counted(&self.state, auth.0.tenant, async {
            let engine = &self.state.engine;
            if ani.0.is_none() && external_id.0.is_none() {
                let mut page = engine
                    .list_customers(auth.0.tenant, after.as_deref(), limit + 1)
                    .await?;
                let more = page.len() as u64 > limit;
                page.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                let next_after = more
                    .then(|| page.last().map(|c| c.customer_ref.clone()))
                    .flatten();
                return Ok(ListResponse::Ok(Json(CustomerListDto {
                    customers: page.into_iter().map(Into::into).collect(),
                    next_after,
                })));
            }
            let found = match parse_identity(
                engine.region(),
                ani.0.as_deref(),
                external_id.0.as_deref(),
                false,
            )? {
                Some((ani, ext)) => {
                    engine
                        .find_customers(auth.0.tenant, ani.as_ref(), ext.as_ref())
                        .await?
                }
                None => Vec::new(),
            };
            let customers = found
                .into_iter()
                .filter(|c| after.as_deref().is_none_or(|a| c.customer_ref.as_str() > a))
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .map(Into::into)
                .collect();
            Ok(ListResponse::Ok(Json(CustomerListDto {
                customers,
                next_after: None,
            })))
        })
        .await
    }

    /// Erase what is kept for a caller number (a caller's request, or no consent).
    ///
    /// Removes the calls from the number (with their summaries and variables), its identity
    /// links, and the customers known only through it who were never named (provisional),
    /// with everything of theirs. Named customers who also called from it keep the rest of
    /// their memory. Irreversible.
    #[oai(path = "/", method = "delete", operation_id = "erase_number")]
    async fn erase_number(
        &self,
        auth: ApiKeyAuth,
        /// The caller number, in any common form.
        #[oai(validator(min_length = 1))]
        ani: Query<String>,
    ) -> Result<EraseNumberResponse, ApiError> {
        auth.with(Scope::CustomersWrite)?;
        let Some((Some(number), _)) =
            parse_identity(self.state.engine.region(), Some(&ani.0), None, true)?
        else {
            // Not a phone number: nothing can be kept for it.
            return Ok(EraseNumberResponse::Ok(Json(NumberErasureDto {
                deleted: DeletedCountsDto {
                    customers: 0,
                    identities: 0,
                    variables: 0,
                    intents: 0,
                    calls: 0,
                },
            })));
        };
        let report = self
            .state
            .engine
            .erase_number(auth.0.tenant, &number)
            .await?;
        super::audit::note(
            &self.state,
            auth.0.tenant,
            "number_erased",
            None,
            counts(&report),
        )
        .await;
        Ok(EraseNumberResponse::Ok(Json(NumberErasureDto {
            deleted: DeletedCountsDto {
                customers: report.customers,
                identities: report.identities,
                variables: report.variables,
                intents: report.intents,
                calls: report.calls,
            },
        })))
    }

    /// Export everything stored about a customer (GDPR access request).
    #[oai(
        path = "/:customer_ref",
        method = "get",
        operation_id = "export_customer"
    )]
    async fn export(
        &self,
        auth: ApiKeyAuth,
        /// The customer's reference.
        #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:@+-]+$"))]
        customer_ref: Path<String>,
    ) -> Result<ExportResponse, ApiError> {
        auth.with(Scope::CustomersRead)?;
        crate::limits::counted(&self.state, auth.0.tenant, async {
            let r = parse_ref(&customer_ref.0)?;
            let e = self.state.engine.export_customer(auth.0.tenant, &r).await?;
            Ok(ExportResponse::Ok(Json(e.into())))
        })
        .await
    }

    /// Erase a customer and everything stored about them (GDPR erasure). Irreversible.
    #[oai(
        path = "/:customer_ref",
        method = "delete",
        operation_id = "erase_customer"
    )]
    async fn erase(
        &self,
        auth: ApiKeyAuth,
        /// The customer's reference.
        #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:@+-]+$"))]
        customer_ref: Path<String>,
    ) -> Result<EraseResponse, ApiError> {
        auth.with(Scope::CustomersWrite)?;
        let r = parse_ref(&customer_ref.0)?;
        let report = self.state.engine.erase_customer(auth.0.tenant, &r).await?;
        super::audit::note(
            &self.state,
            auth.0.tenant,
            "customer_erased",
            None,
            counts(&report),
        )
        .await;
        Ok(EraseResponse::Ok(Json(ErasureDto {
            customer_ref: r.as_str().to_owned(),
            deleted: DeletedCountsDto {
                customers: report.customers,
                identities: report.identities,
                variables: report.variables,
                intents: report.intents,
                calls: report.calls,
            },
        })))
    }

    /// Unlink a wrong identity from a customer (a reassigned number, a mistyped CRM id).
    #[oai(
        path = "/:customer_ref/unlink",
        method = "post",
        operation_id = "unlink_identity"
    )]
    async fn unlink(
        &self,
        auth: ApiKeyAuth,
        /// The customer's reference.
        #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:@+-]+$"))]
        customer_ref: Path<String>,
        body: StrictJson<UnlinkRequest>,
    ) -> Result<UnlinkResult, ApiError> {
        auth.with(Scope::CustomersWrite)?;
        let r = parse_ref(&customer_ref.0)?;
        let Some((ani, ext)) = parse_identity(
            self.state.engine.region(),
            body.0.ani.as_deref(),
            body.0.external_id.as_deref(),
            true,
        )?
        else {
            return Err(ApiError::new(
                poem::http::StatusCode::NOT_FOUND,
                "identity_not_found",
                "the customer has no such identity",
            ));
        };
        let removed = self
            .state
            .engine
            .unlink_identity(auth.0.tenant, &r, ani.as_ref(), ext.as_ref())
            .await?;
        Ok(UnlinkResult::Ok(Json(UnlinkResponse { removed })))
    }

    /// Resolve a customer's intent outside a call.
    #[oai(
        path = "/:customer_ref/intents/:intent/resolve",
        method = "post",
        operation_id = "resolve_intent"
    )]
    async fn resolve_intent(
        &self,
        auth: ApiKeyAuth,
        /// The customer's reference.
        #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:@+-]+$"))]
        customer_ref: Path<String>,
        /// The intent's name.
        #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9_.:-]+$"))]
        intent: Path<String>,
    ) -> Result<ResolveResponse, ApiError> {
        auth.with(Scope::CustomersWrite)?;
        let r = parse_ref(&customer_ref.0)?;
        let name = IntentName::parse(&intent.0).map_err(|e| ApiError::invalid("intent", e.0))?;
        let updated = self
            .state
            .engine
            .resolve_intent(auth.0.tenant, &r, &name)
            .await?;
        Ok(ResolveResponse::Ok(Json(updated.into())))
    }
}
