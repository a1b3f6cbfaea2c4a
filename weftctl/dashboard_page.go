package weftctl

import _ "embed"

// dashboardPage is the dashboard's one page: plain HTML, CSS and
// JavaScript, no framework and nothing fetched from elsewhere; it draws the
// mesh from the JSON of dashboard_api.go.
//
//go:embed dashboard.html
var dashboardPage []byte
