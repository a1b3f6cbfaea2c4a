//go:build !unix

package main

import "os/exec"

// setGroup leaves cmd as it is: cancelling it kills the process alone.
func setGroup(*exec.Cmd) {}
