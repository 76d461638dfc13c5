{{/* Names and labels. */}}
{{- define "mcpgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mcpgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mcpgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcpgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mcpgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mcpgate.selectorLabels" . }}
app.kubernetes.io/version: {{ include "mcpgate.imageTag" . | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mcpgate
{{- end -}}

{{- define "mcpgate.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{- define "mcpgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "mcpgate.imageTag" .) -}}
{{- end -}}

{{- define "mcpgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mcpgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mcpgate.redisFullname" -}}
{{- printf "%s-redis" (include "mcpgate.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}

{{/* "true" when sessions live in Redis. */}}
{{- define "mcpgate.redisEnabled" -}}
{{- if or .Values.redis.enabled .Values.redis.inChart.enabled -}}true{{- end -}}
{{- end -}}

{{/* "true" when a Redis password is configured (value or existing Secret). */}}
{{- define "mcpgate.redisPassword" -}}
{{- if or .Values.redis.password .Values.redis.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* "true" when an HMAC key is configured (value or existing Secret). */}}
{{- define "mcpgate.hmacKey" -}}
{{- if or .Values.hmacKey.value .Values.hmacKey.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* "true" when the chart makes the Secret holding hmacKey.value and/or redis.password. */}}
{{- define "mcpgate.chartSecret" -}}
{{- if or (and .Values.hmacKey.value (not .Values.hmacKey.existingSecret)) (and .Values.redis.password (not .Values.redis.existingSecret)) -}}true{{- end -}}
{{- end -}}

{{- define "mcpgate.terminationGracePeriodSeconds" -}}
{{- add (int .Values.preStopSeconds) (int .Values.drainGraceSeconds) (int .Values.terminationGraceMarginSeconds) -}}
{{- end -}}

{{/*
Checks across values that the schema cannot express; each fails the render with the fix.
*/}}
{{- define "mcpgate.validate" -}}
{{- $redis := include "mcpgate.redisEnabled" . -}}
{{- if and (not $redis) (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) -}}
{{- fail "more than one replica (replicaCount > 1 or autoscaling.enabled) needs the Redis session store: set redis.enabled=true with redis.url/sentinels/nodes, or redis.inChart.enabled=true; the memory store keeps sessions in one process" -}}
{{- end -}}
{{- if and $redis (not (include "mcpgate.hmacKey" .)) -}}
{{- fail "the Redis session store needs an HMAC key shared by every replica: set hmacKey.value (>= 32 characters, e.g. `openssl rand -hex 32`) or hmacKey.existingSecret; the chart does not generate one because it would change on every `helm template`/upgrade and break requests in flight" -}}
{{- end -}}
{{- if and .Values.hmacKey.value (lt (len .Values.hmacKey.value) 32) -}}
{{- fail "hmacKey.value must be at least 32 characters" -}}
{{- end -}}
{{- if and .Values.redis.inChart.enabled (ne .Values.redis.mode "standalone") -}}
{{- fail "redis.inChart.enabled deploys a single Redis: use redis.mode=standalone" -}}
{{- end -}}
{{- if and .Values.redis.inChart.enabled .Values.redis.url -}}
{{- fail "redis.inChart.enabled sets the Redis URL itself: leave redis.url empty" -}}
{{- end -}}
{{- if and .Values.podDisruptionBudget.enabled (eq (kindIs "invalid" .Values.podDisruptionBudget.minAvailable) (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) -}}
{{- fail "podDisruptionBudget: set exactly one of minAvailable and maxUnavailable (the other null)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- $config := .Values.config | default dict -}}
{{- $managed := dict "server" (list "listen" "drain_grace" "hmac_key" "hmac_key_file") "admin" (list "listen") "session" (list "store") -}}
{{- range $section, $keys := $managed -}}
{{- if hasKey $config $section -}}
{{- $table := index $config $section -}}
{{- range $keys -}}
{{- if and (kindIs "map" $table) (hasKey $table .) -}}
{{- fail (printf "config.%s.%s is set by the chart (see README: drainGraceSeconds, hmacKey, redis.*; the listen addresses are fixed); remove it from config" $section .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if hasKey $config "redis" -}}
{{- fail "config.redis is set by the chart: use the redis.* values" -}}
{{- end -}}
{{- if hasKey $config "upstreams" -}}
{{- fail "config.upstreams: use the top-level `upstreams` list" -}}
{{- end -}}
{{- if and .Values.auth.apiKeysSecret (hasKey $config "server") -}}
{{- if and (kindIs "map" $config.server) (hasKey $config.server "auth") (kindIs "map" $config.server.auth) (hasKey $config.server.auth "api_keys_dir") -}}
{{- fail "config.server.auth.api_keys_dir is set by the chart when auth.apiKeysSecret is set" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Makes a decoded values tree fit for toToml, in place: whole numbers become integers (Helm reads
every YAML number as float64, which toToml would print as `30.0` and the gateway's integer
fields refuse), nulls are dropped (toToml cannot print them; null removes a key). Call with a
map; lists are rebuilt and put back.
*/}}
{{- define "mcpgate.normalize" -}}
{{- $m := . -}}
{{- range $k, $v := $m -}}
{{- if kindIs "invalid" $v -}}
{{- $_ := unset $m $k -}}
{{- else if kindIs "float64" $v -}}
{{- if eq $v (float64 (int64 $v)) -}}
{{- $_ := set $m $k (int64 $v) -}}
{{- end -}}
{{- else if kindIs "map" $v -}}
{{- include "mcpgate.normalize" $v -}}
{{- else if kindIs "slice" $v -}}
{{- $out := list -}}
{{- range $v -}}
{{- $w := dict "v" . -}}
{{- include "mcpgate.normalize" $w -}}
{{- if hasKey $w "v" -}}
{{- $out = append $out $w.v -}}
{{- end -}}
{{- end -}}
{{- $_ := set $m $k $out -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The gateway configuration (mcpgate.toml): `config` deep-merged under what the chart sets.
*/}}
{{- define "mcpgate.configToml" -}}
{{- include "mcpgate.validate" . -}}
{{- $c := deepCopy (.Values.config | default dict) -}}
{{- range $section := list "server" "admin" "session" -}}
{{- if not (kindIs "map" (index $c $section)) -}}
{{- $_ := set $c $section dict -}}
{{- end -}}
{{- end -}}
{{- $_ := set $c.server "listen" "0.0.0.0:8080" -}}
{{- $_ := set $c.server "drain_grace" (printf "%ds" (int .Values.drainGraceSeconds)) -}}
{{- if include "mcpgate.hmacKey" . -}}
{{- $_ := set $c.server "hmac_key_file" "/etc/mcpgate/secrets/hmac-key" -}}
{{- end -}}
{{- if .Values.auth.apiKeysSecret -}}
{{- if not (kindIs "map" (index $c.server "auth")) -}}
{{- $_ := set $c.server "auth" dict -}}
{{- end -}}
{{- $mode := index $c.server.auth "mode" | default "api_key" -}}
{{- if ne $mode "api_key" -}}
{{- fail (printf "auth.apiKeysSecret needs config.server.auth.mode = \"api_key\" (it is %q)" $mode) -}}
{{- end -}}
{{- $_ := set $c.server.auth "mode" "api_key" -}}
{{- $_ := set $c.server.auth "api_keys_dir" "/etc/mcpgate/api-keys" -}}
{{- end -}}
{{- $_ := set $c.admin "listen" "0.0.0.0:9090" -}}
{{- if include "mcpgate.redisEnabled" . -}}
{{- $_ := set $c.session "store" "redis" -}}
{{- $r := .Values.redis -}}
{{- $redis := dict "mode" $r.mode "pool_size" $r.poolSize "timeout" $r.timeout -}}
{{- if eq $r.mode "standalone" -}}
{{- if $r.inChart.enabled -}}
{{- $_ := set $redis "url" (printf "redis://%s.%s.svc:6379" (include "mcpgate.redisFullname" .) .Release.Namespace) -}}
{{- else -}}
{{- $_ := set $redis "url" (required "redis.url is required with redis.mode=standalone (or set redis.inChart.enabled=true)" $r.url) -}}
{{- end -}}
{{- else if eq $r.mode "sentinel" -}}
{{- if not $r.sentinels -}}{{- fail "redis.sentinels is required with redis.mode=sentinel" -}}{{- end -}}
{{- $_ := set $redis "sentinels" $r.sentinels -}}
{{- $_ := set $redis "master_name" (required "redis.masterName is required with redis.mode=sentinel" $r.masterName) -}}
{{- else if eq $r.mode "cluster" -}}
{{- if not $r.nodes -}}{{- fail "redis.nodes is required with redis.mode=cluster" -}}{{- end -}}
{{- if not (kindIs "invalid" $r.db) -}}{{- fail "redis.db cannot be used with redis.mode=cluster (Redis Cluster has only database 0)" -}}{{- end -}}
{{- $_ := set $redis "nodes" $r.nodes -}}
{{- end -}}
{{- if $r.username -}}{{- $_ := set $redis "username" $r.username -}}{{- end -}}
{{- if not (kindIs "invalid" $r.db) -}}{{- $_ := set $redis "db" $r.db -}}{{- end -}}
{{- if include "mcpgate.redisPassword" . -}}
{{- $_ := set $redis "password_file" "/etc/mcpgate/secrets/redis-password" -}}
{{- end -}}
{{- $_ := set $c "redis" (deepCopy $redis) -}}
{{- else -}}
{{- $_ := set $c.session "store" "memory" -}}
{{- end -}}
{{- if .Values.upstreams -}}
{{- $_ := set $c "upstreams" (deepCopy .Values.upstreams) -}}
{{- end -}}
{{- include "mcpgate.normalize" $c -}}
{{- toToml $c -}}
{{- end -}}

{{/*
Where the gateway reads its configuration: the ConfigMap's folder (a separate folder, so that
/etc/mcpgate/secrets and /etc/mcpgate/api-keys stay mounts of their own) and the file in it.
*/}}
{{- define "mcpgate.configDir" -}}
/etc/mcpgate/config
{{- end -}}

{{- define "mcpgate.configPath" -}}
{{- printf "%s/mcpgate.toml" (include "mcpgate.configDir" .) -}}
{{- end -}}

{{/*
What checksum/config hashes. With liveReload.enabled, the configuration rendered without
`upstreams`: the running pods reload [[upstreams]] from the updated ConfigMap by themselves, and
every other key takes effect only at a restart, so only those roll the pods. Otherwise the whole
configuration: any change rolls the pods.
*/}}
{{- define "mcpgate.configChecksumSource" -}}
{{- if .Values.liveReload.enabled -}}
{{- $values := omit .Values "upstreams" -}}
{{- include "mcpgate.configToml" (dict "Values" $values "Release" .Release "Chart" .Chart "Capabilities" .Capabilities "Template" .Template) -}}
{{- else -}}
{{- include "mcpgate.configToml" . -}}
{{- end -}}
{{- end -}}

{{/* Data of the chart-made Secret. */}}
{{- define "mcpgate.secretData" -}}
{{- if and .Values.hmacKey.value (not .Values.hmacKey.existingSecret) }}
hmac-key: {{ .Values.hmacKey.value | b64enc | quote }}
{{- end }}
{{- if and .Values.redis.password (not .Values.redis.existingSecret) }}
redis-password: {{ .Values.redis.password | b64enc | quote }}
{{- end }}
{{- end -}}

{{/* Where each secret file comes from: "<secret>/<key>", for the checksum. */}}
{{- define "mcpgate.secretSources" -}}
hmac: {{ .Values.hmacKey.existingSecret }}/{{ .Values.hmacKey.existingSecretKey }}
redis: {{ .Values.redis.existingSecret }}/{{ .Values.redis.existingSecretKey }}
api-keys: {{ .Values.auth.apiKeysSecret }}
{{ include "mcpgate.secretData" . }}
{{- end -}}
