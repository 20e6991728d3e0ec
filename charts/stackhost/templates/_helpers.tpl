{{/* Names and labels shared by the templates. */}}

{{- define "stackhost.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "stackhost.fullname" -}}
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

{{- define "stackhost.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stackhost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "stackhost.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "stackhost.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stackhost
{{- end -}}

{{- define "stackhost.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "stackhost.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "stackhost.image" -}}
{{- $repo := required "image.repository: set it to where you pushed the stackhost image (scripts/image --push REGISTRY/REPO:TAG)" .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The hooks' Service, its DNS names, and the Secret holding the serving certificate. */}}
{{- define "stackhost.hooksService" -}}
{{- printf "%s-hooks" (include "stackhost.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "stackhost.hooksSecret" -}}
{{- if .Values.certManager.enabled -}}
{{- printf "%s-hooks-tls" (include "stackhost.fullname" .) -}}
{{- else -}}
{{- required "hooks.tls.secretName: without cert-manager, name a Secret with tls.crt and tls.key for the hooks (or set certManager.enabled=true)" .Values.hooks.tls.secretName -}}
{{- end -}}
{{- end -}}

{{- define "stackhost.issuerName" -}}
{{- if .Values.certManager.createIssuer -}}
{{- printf "%s-selfsigned" (include "stackhost.fullname" .) -}}
{{- else -}}
{{- required "certManager.issuerRef.name: name an existing Issuer or ClusterIssuer (or set certManager.createIssuer=true)" .Values.certManager.issuerRef.name -}}
{{- end -}}
{{- end -}}

{{/* Namespaced (Roles in watch.namespace) or cluster-wide (ClusterRoles) RBAC. */}}
{{- define "stackhost.namespaced" -}}
{{- if .Values.watch.namespace -}}true{{- end -}}
{{- end -}}
