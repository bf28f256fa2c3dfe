{{/*
Names and labels shared by every object of the chart.
*/}}

{{- define "politetenant.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: the release name when it already contains the chart name, else both.
The ClusterRole and ClusterRoleBinding use it too, so two releases never share them.
*/}}
{{- define "politetenant.fullname" -}}
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

{{- define "politetenant.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "politetenant.selectorLabels" -}}
app.kubernetes.io/name: {{ include "politetenant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "politetenant.labels" -}}
helm.sh/chart: {{ include "politetenant.chart" . }}
{{ include "politetenant.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: politetenant
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "politetenant.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "politetenant.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: a digest pins it exactly; otherwise the tag, defaulting to the appVersion.
*/}}
{{- define "politetenant.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The operator's Vault sign-in from `vault` in the values, as operator.config.vault settings (YAML;
empty when neither way is set). Files live in the "vault" volume of the Deployment.
*/}}
{{- define "politetenant.vaultSignIn" -}}
{{- if and .Values.vault.tokenSecret .Values.vault.kubernetesRole }}
{{- fail "vault.tokenSecret and vault.kubernetesRole: set one way for the operator to sign in to Vault, not both" }}
{{- end }}
{{- if .Values.vault.tokenSecret }}
token_file: /var/run/secrets/polite-operator/vault/token
{{- else if .Values.vault.kubernetesRole }}
kubernetes_role: {{ .Values.vault.kubernetesRole | quote }}
jwt_file: /var/run/secrets/polite-operator/vault/jwt
{{- end }}
{{- end }}
