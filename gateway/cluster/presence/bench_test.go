package presence

import (
	"context"
	"testing"

	"github.com/telegate/telegate/internal/testenv"
)

// BenchmarkClaim is the cost presence adds to every MQTT connect: one KV
// put of a claim (file storage), on a single node and on a 3-node cluster
// (bucket with 3 replicas).
func BenchmarkClaim(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		b.Run(map[int]string{1: "nodes=1", 3: "nodes=3"}[nodes], func(b *testing.B) {
			c := testenv.StartNATSCluster(b, nodes)
			ctx := context.Background()
			kv, err := c.JetStream(b, 0).CreateOrUpdateKeyValue(ctx, BucketConfig(nodes))
			if err != nil {
				b.Fatal(err)
			}
			val := []byte(`{"replica":"gw-0123456789ab","nonce":"0123456789abcdef","at":"2026-01-01T00:00:00Z"}`)
			b.ResetTimer()
			for i := range b.N {
				if _, err := kv.Put(ctx, Key("TGSVS"+string(rune('A'+i%26))), val); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
