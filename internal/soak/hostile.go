package soak

import (
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// hostileInputs are byte sequences no correct client sends: garbage,
// impossible lengths, packets before CONNECT, malformed CONNECTs, and
// protocol violations after a valid-looking CONNECT header.
var hostileInputs = [][]byte{
	{0x10, 0xFF, 0xFF, 0xFF, 0x7F},                                        // 256 MiB CONNECT
	{0x30, 0x80, 0x80, 0x80, 0x80, 0x01},                                  // fifth length byte
	{0xC0, 0x00},                                                          // PINGREQ before CONNECT
	{0x82, 0x04, 0x00, 0x01, 0x00, 0x00},                                  // SUBSCRIBE before CONNECT
	{0x00, 0x00},                                                          // reserved type
	{0x10, 0x06, 0x00, 0x04, 'M', 'Q', 'T', 'T'},                          // truncated CONNECT
	{0x10, 0x0A, 0x00, 0x04, 'M', 'Q', 'T', 'X', 4, 2, 0, 30},             // wrong protocol name
	{0x10, 0x0C, 0x00, 0x04, 'M', 'Q', 'T', 'T', 5, 2, 0, 30, 0xFF, 0xFF}, // v5 property overflow
	[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00}, // TLS hello
}

// hostileBurst opens n connections to addr, each sending one hostile input
// (or random bytes, or nothing: a silent socket closed at the connect
// timeout of the gateway), and closes them. It returns how many
// connections were made.
func hostileBurst(addr string, n int) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	made := 0
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			mu.Lock()
			made++
			mu.Unlock()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			switch i % 10 {
			case 9: // random garbage
				b := make([]byte, 1+rand.IntN(512))
				for j := range b {
					b[j] = byte(rand.UintN(256))
				}
				_, _ = c.Write(b)
			case 8: // silent: the client gives up first (2 s)
			default:
				_, _ = c.Write(hostileInputs[i%len(hostileInputs)])
			}
			buf := make([]byte, 256)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return made
}
