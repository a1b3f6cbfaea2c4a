package model

import "testing"

// A DENY filter's methods deny HEAD for GET and any case of themselves; an
// ALLOW filter's are exact (docs/l7.md "Authorization at L7").
func TestAllowsRequestMethodVariants(t *testing.T) {
	pol := []RBACPolicy{{Name: "p", Principals: []Principal{{Any: true}},
		Permissions: []Permission{{Methods: []string{"GET"}, Paths: []PathMatch{{Exact: "/admin"}}}}}}
	deny, allow := RBACFilter{Action: RBACDeny, Policies: pol}, RBACFilter{Action: RBACAllow, Policies: pol}
	for _, tc := range []struct {
		method          string
		denyOK, allowOK bool
	}{
		{"GET", false, true}, {"get", false, false}, {"HEAD", false, false}, {"head", false, false},
		{"POST", true, false}, {"OPTIONS", true, false},
	} {
		if ok, _ := deny.AllowsRequest("", 80, tc.method, "/admin"); ok != tc.denyOK {
			t.Errorf("DENY GET /admin allows %s: %v, want %v", tc.method, ok, tc.denyOK)
		}
		if ok, _ := allow.AllowsRequest("", 80, tc.method, "/admin"); ok != tc.allowOK {
			t.Errorf("ALLOW GET /admin allows %s: %v, want %v", tc.method, ok, tc.allowOK)
		}
	}
}
