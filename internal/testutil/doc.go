// Package testutil holds fakes and helpers shared by weft's tests: one fake
// per contract, reused everywhere. Nothing here is imported by production
// code.
package testutil
