package proxy

import (
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// BenchmarkWriteBounded: the CPU of one bounded write of a copy buffer's
// worth (32 KiB) and of a small one (1 KiB) to a loopback peer that reads
// everything, with the write deadline set for the write and cleared after
// it (writeBounded, "clear") against set and left armed (the hardening's
// first version, "keep") and no deadline at all ("none"). In one binary,
// so the three compare on the same machine and load.
func BenchmarkWriteBounded(b *testing.B) {
	for _, size := range []int{1 << 10, bufSize} {
		for _, mode := range []string{"none", "keep", "clear"} {
			b.Run(mode+"/"+byteSize(size), func(b *testing.B) {
				c, s := loopbackPair(b)
				go io.Copy(io.Discard, s)
				buf := make([]byte, size)
				w := &idleWatch{}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					var err error
					switch mode {
					case "none":
						_, err = writeBounded(c, buf, 0, w, nil)
					case "keep":
						_ = c.SetWriteDeadline(time.Now().Add(5 * time.Minute))
						_, err = c.Write(buf)
						w.touch()
					case "clear":
						_, err = writeBounded(c, buf, 5*time.Minute, w, nil)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func byteSize(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// loopbackPair is a connected TCP pair on 127.0.0.1.
func loopbackPair(tb testing.TB) (client, server net.Conn) {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}
