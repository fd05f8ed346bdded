{{/* Names, labels and the pieces every role's Deployment shares. */}}

{{- define "loom.roles" -}}
gateway scheduler attention worker
{{- end }}

{{- define "loom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loom.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "loom.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The image tag as a label value: characters a label cannot hold (a digest's "@" and
     ":") become "-", at most 63 characters, starting and ending alphanumeric. */}}
{{- define "loom.version" -}}
{{- $version := regexReplaceAll "[^-A-Za-z0-9_.]" (.Values.image.tag | default .Chart.AppVersion | toString) "-" | trunc 63 }}
{{- regexReplaceAll "^[-_.]+|[-_.]+$" $version "" }}
{{- end }}

{{- define "loom.labels" -}}
helm.sh/chart: {{ include "loom.chart" . }}
{{ include "loom.selectorLabels" . }}
app.kubernetes.io/version: {{ include "loom.version" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: loom
{{- end }}

{{/* The name of a role's objects: "<fullname>-<role>"; call with (dict "root" $ "role" "worker"). */}}
{{- define "loom.roleName" -}}
{{- printf "%s-%s" (include "loom.fullname" .root) .role | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loom.roleSelectorLabels" -}}
{{ include "loom.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "loom.roleLabels" -}}
{{ include "loom.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "loom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "loom.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "loom.secretName" -}}
{{- default (include "loom.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "loom.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Where the pods listen: every role serves /healthz, /readyz and /metrics here. */}}
{{- define "loom.httpPort" -}}
8080
{{- end }}

{{- define "loom.configPath" -}}
/etc/loom/loom.toml
{{- end }}

{{/* Grace period: the drain (LOOM_SHUTDOWN_TIMEOUT) plus a margin for handing back
     cancelled runs and disconnecting. */}}
{{- define "loom.gracePeriod" -}}
{{- add (ceil .Values.shutdownTimeout | int) (.Values.gracePeriodMargin | int) }}
{{- end }}

{{/* The broker-side name of the work queue workers consume (loom.broker.base.namespaced). */}}
{{- define "loom.workQueue" -}}
{{- if .Values.config.namespace }}
{{- printf "%s.loom.work" .Values.config.namespace }}
{{- else -}}
loom.work
{{- end }}
{{- end }}

{{/* The Prometheus query of the KEDA trigger on running sessions: the release's workers'
     loom_active_sessions, as the chart's ServiceMonitor labels them. */}}
{{- define "loom.activeSessionsQuery" -}}
{{- if .Values.keda.prometheus.query }}
{{- .Values.keda.prometheus.query }}
{{- else }}
{{- printf "sum(loom_active_sessions{namespace=%q, service=%q, component=\"worker\"})" .Release.Namespace (printf "%s-metrics" (include "loom.fullname" .)) }}
{{- end }}
{{- end }}

{{/* Sessions one worker replica runs: keda.prometheus.sessionsPerReplica, else the workers'
     concurrency (config.worker.concurrency, default 8). */}}
{{- define "loom.sessionsPerReplica" -}}
{{- $value := .Values.keda.prometheus.sessionsPerReplica | default .Values.config.worker.concurrency | default 8 }}
{{- include "loom.scalar" $value }}
{{- end }}

{{/* A scalar as an env value: integral numbers without an exponent (YAML numbers reach
     templates as float64, and 2592000 would print as 2.592e+06). */}}
{{- define "loom.scalar" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/* config.* as LOOM_* variables: call with (dict "prefix" "LOOM_" "values" .Values.config). */}}
{{- define "loom.configEnv" -}}
{{- $prefix := .prefix }}
{{- range $key, $value := .values }}
{{- $name := printf "%s%s" $prefix (snakecase $key | upper) }}
{{- if kindIs "map" $value }}
{{- include "loom.configEnv" (dict "prefix" (printf "%s__" $name) "values" $value) }}
{{- else if kindIs "slice" $value }}
{{- if $value }}
{{ $name }}: {{ toJson $value | quote }}
{{- end }}
{{- else if not (kindIs "invalid" $value) }}
{{- if ne (toString $value) "" }}
{{ $name }}: {{ include "loom.scalar" $value | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The LOOM_CONFIG file's content as a map (cron, heartbeat, webhooks, extraConfig). */}}
{{- define "loom.configFile" -}}
{{- $file := deepCopy .Values.extraConfig }}
{{- range $key := list "cron" "heartbeat" "webhooks" "capabilities" }}
{{- with index $.Values $key }}
{{- $_ := set $file $key (deepCopy .) }}
{{- end }}
{{- end }}
{{- $box := dict "value" $file }}
{{- include "loom.integers" $box }}
{{- toToml $box.value }}
{{- end }}

{{/* Turn integral float64s back into integers, in place, in (dict "value" ...): YAML numbers
     reach templates as float64, and toToml would write a cron payload's 3 as 3.0. */}}
{{- define "loom.integers" -}}
{{- $box := . }}
{{- $value := $box.value }}
{{- if kindIs "map" $value }}
{{- range $key, $item := $value }}
{{- $inner := dict "value" $item }}
{{- include "loom.integers" $inner }}
{{- $_ := set $value $key $inner.value }}
{{- end }}
{{- else if kindIs "slice" $value }}
{{- $items := list }}
{{- range $item := $value }}
{{- $inner := dict "value" $item }}
{{- include "loom.integers" $inner }}
{{- $items = append $items $inner.value }}
{{- end }}
{{- $_ := set $box "value" $items }}
{{- else if and (kindIs "float64" $value) (eq $value (floor $value)) }}
{{- $_ := set $box "value" (int64 $value) }}
{{- end }}
{{- end }}

{{/* The secret's keys the pods read: env name -> [value, required]. */}}
{{- define "loom.secretKeys" -}}
LOOM_API_TOKEN: {{ .Values.secrets.apiToken | quote }}
LOOM_BROKER_URL: {{ .Values.secrets.brokerUrl | quote }}
LOOM_STATE_URL: {{ .Values.secrets.stateUrl | quote }}
LOOM_WEBHOOK_SECRET: {{ .Values.secrets.webhookSecret | quote }}
LOOM_SLACK__SIGNING_SECRET: {{ .Values.secrets.slackSigningSecret | quote }}
LOOM_SLACK__BOT_TOKEN: {{ .Values.secrets.slackBotToken | quote }}
LOOM_WEBHOOKS__GITHUB_SECRET: {{ .Values.secrets.githubWebhookSecret | quote }}
ANTHROPIC_API_KEY: {{ .Values.secrets.anthropicApiKey | quote }}
OPENAI_API_KEY: {{ .Values.secrets.openaiApiKey | quote }}
{{- end }}

{{/* The keys without which no role can work: read with optional: false. */}}
{{- define "loom.requiredSecretKeys" -}}
LOOM_API_TOKEN LOOM_BROKER_URL LOOM_STATE_URL
{{- end }}

{{/* RABBITMQ_MANAGEMENT_URL: given, or derived from the broker URL (port 15672). */}}
{{- define "loom.managementUrl" -}}
{{- if .Values.secrets.rabbitmqManagementUrl }}
{{- .Values.secrets.rabbitmqManagementUrl }}
{{- else if .Values.secrets.brokerUrl }}
{{- $url := urlParse .Values.secrets.brokerUrl }}
{{- $scheme := ternary "https" "http" (eq $url.scheme "amqps") }}
{{- $port := ternary "15671" "15672" (eq $url.scheme "amqps") }}
{{- $userinfo := ternary "" (printf "%s@" $url.userinfo) (empty $url.userinfo) }}
{{- $vhost := ternary "/" $url.path (or (empty $url.path) (eq $url.path "//")) }}
{{- printf "%s://%s%s:%s%s" $scheme $userinfo $url.hostname $port $vhost }}
{{- end }}
{{- end }}
