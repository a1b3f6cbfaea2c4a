package l7

import (
	"context"
	"net/http/httptrace"
)

// httptraceGotConn calls f with the local address of every connection a
// client request gets.
func httptraceGotConn(ctx context.Context, f func(local string)) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { f(i.Conn.LocalAddr().String()) }})
}
