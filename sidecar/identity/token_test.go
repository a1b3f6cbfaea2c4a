package identity

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestTokenCredentialsReadTheRotatedToken: each stream reads the token file
// afresh, as the kubelet rotates it (it swaps a symlink to a new file).
func TestTokenCredentialsReadTheRotatedToken(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "token")
	write := func(name, tok string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(link + ".tmp")
		if err := os.Symlink(name, link+".tmp"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(link+".tmp", link); err != nil {
			t.Fatal(err)
		}
	}
	creds := TokenCredentials(link)
	if !creds.RequireTransportSecurity() {
		t.Fatal("the token would go over plaintext")
	}
	for _, tok := range []string{"first", "second"} {
		write("..data-"+tok, tok)
		md, err := creds.GetRequestMetadata(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := md["authorization"]; got != "Bearer "+tok {
			t.Fatalf("authorization %q, want Bearer %s", got, tok)
		}
	}
	write("..data-empty", "")
	if _, err := creds.GetRequestMetadata(context.Background()); err == nil {
		t.Fatal("an empty token file sent")
	}
}
