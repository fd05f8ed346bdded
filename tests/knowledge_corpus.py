"""A labelled knowledge corpus: 52 operations documents and 20 questions with their answers.

Thirty service runbooks share one outline (Deploy, Rollback, Alerts, Dependencies), so a
question is answered only by ranking the right service's right section first; the policy
documents are prose. Each query names the document and the heading of its answer.
"""

from __future__ import annotations

SERVICES = [
    # name, datastore, owner, alert, dependency
    ("payments", "PostgreSQL", "billing", "PaymentsLatencyHigh", "ledger"),
    ("ledger", "CockroachDB", "billing", "LedgerReplicationLag", "kafka"),
    ("checkout", "Redis", "storefront", "CheckoutErrorBudgetBurn", "payments"),
    ("catalog", "Elasticsearch", "storefront", "CatalogIndexStale", "images"),
    ("images", "S3", "media", "ImageResizeBacklog", "cdn"),
    ("cdn", "Varnish", "edge", "CdnHitRatioLow", "images"),
    ("search", "OpenSearch", "discovery", "SearchQueryTimeouts", "catalog"),
    ("recommendations", "Cassandra", "discovery", "RecsModelStale", "events"),
    ("events", "Kafka", "data", "EventsConsumerLag", "schema-registry"),
    ("schema-registry", "Zookeeper", "data", "SchemaRegistryDown", "events"),
    ("auth", "MySQL", "identity", "AuthLoginFailuresSpike", "sessions"),
    ("sessions", "Memcached", "identity", "SessionEvictionsHigh", "auth"),
    ("notifications", "SQS", "messaging", "NotificationQueueDepth", "email"),
    ("email", "Postfix", "messaging", "EmailBounceRate", "notifications"),
    ("sms", "Twilio", "messaging", "SmsDeliveryFailures", "notifications"),
    ("inventory", "DynamoDB", "supply", "InventoryOversell", "warehouse"),
    ("warehouse", "Oracle", "supply", "WarehouseSyncFailed", "inventory"),
    ("shipping", "MongoDB", "logistics", "ShippingLabelErrors", "carriers"),
    ("carriers", "RabbitMQ", "logistics", "CarrierApiThrottled", "shipping"),
    ("pricing", "ClickHouse", "revenue", "PricingRuleConflict", "catalog"),
    ("tax", "SQLite", "revenue", "TaxRateMissing", "pricing"),
    ("reviews", "Neo4j", "community", "ReviewSpamSurge", "moderation"),
    ("moderation", "Bigtable", "community", "ModerationQueueAging", "reviews"),
    ("analytics", "BigQuery", "data", "AnalyticsJobOverdue", "events"),
    ("billing-export", "Snowflake", "billing", "ExportFileMissing", "ledger"),
    ("feature-flags", "etcd", "platform", "FlagSyncDrift", "config"),
    ("config", "Consul", "platform", "ConfigPushRejected", "feature-flags"),
    ("gateway", "Envoy", "edge", "GatewayFiveHundreds", "auth"),
    ("scheduler", "Quartz", "platform", "SchedulerMissedFires", "config"),
    ("audit", "Elasticsearch", "security", "AuditLogGap", "events"),
]


def _runbook(name: str, store: str, owner: str, alert: str, dependency: str) -> str:
    title = name.replace("-", " ").title()
    return f"""# {title} service

The {title} service is owned by the {owner} team.

## Deploy
Deploys of {name} go through the Argo CD application {name}-prod. A canary takes ten
percent of traffic for fifteen minutes before the rest.

## Rollback
To roll back {name}, run `kubectl rollout undo deployment/{name} -n {owner}` and watch the
error rate of {name} return to its baseline. Tell the {owner} channel.

## Alerts
{alert} pages the {owner} on-call. For {name}, first look at the {store} dashboards: most
pages come from {store} being slow or saturated.

## Dependencies
{title} stores its data in {store} and calls the {dependency} service.
"""


POLICIES = {
    "policies/change-freeze.md": """# Change freeze
## Fridays
No production deploys after 15:00 on Fridays, nor on the day before a public holiday.
## Exceptions
A freeze exception needs approval from the duty director, recorded in the change ticket.
""",
    "policies/incident-severity.md": """# Incident severity
## Levels
SEV1: customers cannot pay or log in. SEV2: a major feature is degraded. SEV3: minor.
## Paging
SEV1 pages the incident commander rotation immediately; SEV2 within fifteen minutes.
""",
    "policies/postmortems.md": """# Postmortems
## When
Every SEV1 and SEV2 gets a blameless postmortem within five working days.
## Template
Timeline, impact, contributing factors, action items with owners and due dates.
""",
    "policies/access-reviews.md": """# Access reviews
## Quarterly review
Managers confirm their reports' production access every quarter; unconfirmed access is
revoked automatically.
""",
    "policies/secrets.md": """# Secrets handling
## Storage
Secrets live in Vault under kv/prod; never in git, tickets or chat.
## Rotation
Database passwords rotate every 90 days; API keys every 180 days.
""",
    "policies/on-call.md": """# On-call
## Handover
The outgoing on-call engineer writes a handover note every Monday at 10:00.
## Compensation
Each week on call earns one day off in lieu.
""",
    "policies/backups.md": """# Backups
## Schedule
Databases are snapshotted nightly at 02:00 UTC and kept for 35 days.
## Restore drills
A restore drill runs every month; its duration is recorded as the measured RTO.
""",
    "policies/data-retention.md": """# Data retention
## Logs
Application logs are kept 30 days; audit logs 7 years.
## Deletion requests
Customer deletion requests are fulfilled within 30 days across every datastore.
""",
    "policies/capacity.md": """# Capacity planning
## Headroom
Every cluster keeps 30 percent CPU headroom at the weekly peak.
## Forecast
The platform team publishes a quarterly forecast of node counts.
""",
    "policies/dependencies-upgrades.md": """# Dependency upgrades
## Cadence
Base images are rebuilt weekly; critical CVEs are patched within 72 hours.
""",
    "policies/code-review.md": """# Code review
## Approvals
Two approvals are needed for changes to infrastructure code; one for application code.
""",
    "policies/load-testing.md": """# Load testing
## Before launches
A launch needs a load test at twice the forecast peak, run against staging with k6.
""",
    "policies/feature-launch.md": """# Feature launch checklist
## Dark launch
New features ship behind a flag, dark-launched to employees for one week first.
""",
    "policies/vendor-outage.md": """# Vendor outages
## Cloud provider
When the cloud provider reports a regional outage, fail over to the secondary region
using the traffic-shift runbook; the incident commander decides.
""",
    "policies/cost.md": """# Cost controls
## Budgets
Each team has a monthly cloud budget; an alert fires at 80 percent of it.
""",
    "policies/certificates.md": """# TLS certificates
## Renewal
cert-manager renews certificates 30 days before expiry; a failing renewal pages the edge
team.
""",
    "policies/dns.md": """# DNS changes
## TTL
Lower the record TTL to 60 seconds a day before a planned DNS cut-over.
""",
    "policies/status-page.md": """# Status page
## Updates
During a SEV1, the status page is updated every 30 minutes by the communications lead.
""",
    "policies/game-days.md": """# Game days
## Chaos experiments
Chaos experiments run in production only during game days, announced a week ahead.
""",
    "policies/runbook-style.md": """# Runbook style
## Structure
Every runbook has Deploy, Rollback, Alerts and Dependencies sections.
""",
    "policies/kubernetes-upgrades.md": """# Kubernetes upgrades
## Cadence
Clusters are upgraded one minor version at a time, staging first, production a week later.
""",
    "policies/database-migrations.md": """# Database migrations
## Expand and contract
Schema changes are backwards compatible: add columns first, backfill, then drop the old
ones in a later release.
""",
}

CORPUS: dict[str, str] = {
    **{f"services/{s[0]}.md": _runbook(*s) for s in SERVICES},
    **POLICIES,
}

QUERIES: list[tuple[str, str, str, str]] = [
    # question, goal, document, heading (the end of the chunk's heading path)
    (
        "How do I roll back the payments service?",
        "recover from a bad deploy",
        "services/payments.md",
        "Rollback",
    ),
    ("what datastore does the ledger use", "", "services/ledger.md", "Dependencies"),
    (
        "CheckoutErrorBudgetBurn fired, where do I look first?",
        "handle a page",
        "services/checkout.md",
        "Alerts",
    ),
    (
        "Which team owns inventory alerts like InventoryOversell?",
        "",
        "services/inventory.md",
        "Alerts",
    ),
    ("undo a broken shipping rollout", "", "services/shipping.md", "Rollback"),
    ("How is the gateway deployed, is there a canary?", "", "services/gateway.md", "Deploy"),
    (
        "Can we deploy to production on Friday afternoon?",
        "plan a release",
        "policies/change-freeze.md",
        "Fridays",
    ),
    ("who approves a freeze exception", "", "policies/change-freeze.md", "Exceptions"),
    ("When is a postmortem required?", "", "policies/postmortems.md", "When"),
    ("how often are database passwords rotated", "", "policies/secrets.md", "Rotation"),
    ("how long are nightly database snapshots kept", "", "policies/backups.md", "Schedule"),
    ("How long do we keep audit logs?", "", "policies/data-retention.md", "Logs"),
    ("how much CPU headroom must a cluster keep", "", "policies/capacity.md", "Headroom"),
    ("critical CVE patch deadline", "", "policies/dependencies-upgrades.md", "Cadence"),
    (
        "The cloud region is down, should we fail over?",
        "handle a vendor outage",
        "policies/vendor-outage.md",
        "Cloud provider",
    ),
    ("what should I lower before a DNS cut-over", "", "policies/dns.md", "TTL"),
    ("how often to update the status page during a SEV1", "", "policies/status-page.md", "Updates"),
    ("SchedulerMissedFires page", "", "services/scheduler.md", "Alerts"),
    (
        "add a column safely in a schema change",
        "",
        "policies/database-migrations.md",
        "Expand and contract",
    ),
    (
        "what does the recommendations service depend on",
        "",
        "services/recommendations.md",
        "Dependencies",
    ),
]
