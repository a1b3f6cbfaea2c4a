package certs

import "errors"

// Sentinel errors; every error this package returns wraps one of them (or
// an error from the standard library) and says which values caused it.
var (
	// ErrInvalidCSR: the CSR is malformed, badly signed, uses a refused key,
	// or asks to be a CA.
	ErrInvalidCSR = errors.New("invalid CSR")
	// ErrInvalidRequest: the SignRequest's ID, DNS names or TTL are refused.
	ErrInvalidRequest = errors.New("invalid sign request")
	// ErrInvalidMaterial: stored CA material cannot be used (garbage PEM,
	// keys not matching certificates, broken chain, expired).
	ErrInvalidMaterial = errors.New("invalid CA material")
	// ErrRotation: a rotation step was called out of order.
	ErrRotation = errors.New("root rotation out of order")
	// ErrExpired: the intermediate (or a root) has expired.
	ErrExpired = errors.New("certificate expired")
)
