//go:build tools

// Package tools pins the command this wrapper module builds (helm, for the chart's lint and render tests).
package tools

import _ "helm.sh/helm/v4/cmd/helm"
