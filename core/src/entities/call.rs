//! A call: its hints as received (ANI in E.164), the start's match (customer, confidence,
//! signals, candidates: enough to replay a retried start), and what its ends saved.
use sea_orm::entity::prelude::*;

/// `status` of a call that has started and not ended.
pub const STATUS_IN_PROGRESS: &str = "in_progress";
/// `status` of a call that has ended.
pub const STATUS_ENDED: &str = "ended";

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "calls")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub call_id: String,
    pub platform: String,
    pub ani: Option<String>,
    pub ani_withheld: bool,
    pub dnis: Option<String>,
    /// JSON object `{name: value}`.
    pub external_ids: String,
    pub matched_customer_id: Option<i64>,
    pub confidence: Option<f64>,
    pub band: Option<String>,
    pub recommended_action: Option<String>,
    /// JSON array of signals from the start.
    pub signals: String,
    /// JSON array of `{customer, confidence}` from the start.
    pub candidates: String,
    pub customer_id: Option<i64>,
    pub status: String,
    pub intent: Option<String>,
    pub intent_status: Option<String>,
    pub summary: Option<String>,
    /// JSON object of the variables the call's ends saved.
    pub variables: String,
    pub started_at: Option<DateTimeUtc>,
    pub ended_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
