//go:build linux

package listener

import "testing"

func TestQuietLowatFor(t *testing.T) {
	for _, c := range []struct{ rcvbuf, want int }{
		{0, quietLowat}, {131072, quietLowat}, {1 << 20, quietLowat}, {65536, 16384}, {4096, 1024}, {2, 1},
	} {
		if got := quietLowatFor(c.rcvbuf); got != c.want {
			t.Errorf("quietLowatFor(%d) = %d, want %d", c.rcvbuf, got, c.want)
		}
	}
}
