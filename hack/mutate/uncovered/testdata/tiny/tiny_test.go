package tiny

import "testing"

func TestSign(t *testing.T) {
	if Sign(5) != 1 || Sign(-5) != -1 || Sign(0) != 0 {
		t.Fatal("Sign")
	}
}

func TestSpin(t *testing.T) {
	if Spin(3) != 3 {
		t.Fatal("Spin")
	}
}
