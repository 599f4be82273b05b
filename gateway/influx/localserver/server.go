package localserver

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/telegate/telegate/gateway/influx"
)

// ServerConfig is a Config plus the authentication bootstrap.
type ServerConfig struct {
	Config
	// Database is created, with the users that may use it (default
	// "telemetry").
	Database string
	// CredentialsFile keeps the generated users' passwords (mode 0600;
	// default <Dir>/credentials.json), created on first start and reused.
	CredentialsFile string
}

// Server is a running local influxd with authentication set up. Its
// fields are set by Start and read-only after.
type Server struct {
	*Process
	creds influx.Credentials
}

// Start launches influxd (StartProcess) with authentication on, then
// creates or checks its users and database (Bootstrap) with the
// credentials of cfg.CredentialsFile, generating that file on first start.
func Start(ctx context.Context, cfg ServerConfig, log *slog.Logger) (*Server, error) {
	if cfg.CredentialsFile == "" {
		cfg.CredentialsFile = filepath.Join(cfg.Dir, "credentials.json")
	}
	if cfg.Database == "" {
		cfg.Database = "telemetry"
	}
	creds, err := influx.LoadOrCreateCredentials(cfg.CredentialsFile, cfg.Database)
	if err != nil {
		return nil, fmt.Errorf("localserver: %w", err)
	}
	creds.Database = cfg.Database
	p, err := StartProcess(ctx, cfg.Config)
	if err != nil {
		return nil, err
	}
	if err := Bootstrap(ctx, p.URL(), creds); err != nil {
		p.Stop()
		return nil, fmt.Errorf("localserver: %w (credentials %s)", err, cfg.CredentialsFile)
	}
	log.Info("local influxd ready", "addr", cfg.HTTPAddr, "dir", cfg.Dir, "pid", p.Pid(),
		"auth", "on", "credentials", cfg.CredentialsFile)
	return &Server{Process: p, creds: creds}, nil
}

// Bootstrap creates the first admin of a fresh server (1.x accepts that
// one statement without credentials), then, as admin, the database, the
// writer (ALL on it) and the reader (READ on it); idempotent (see
// influx.SetupAuth).
func Bootstrap(ctx context.Context, url string, c influx.Credentials) error {
	return influx.SetupAuth(ctx, url, c)
}

// Credentials are the local server's users (admin, writer, reader).
func (s *Server) Credentials() influx.Credentials { return s.creds }

// EnsureDatabase re-creates the database and the users' grants as admin
// (after an operator dropped it); idempotent.
func (s *Server) EnsureDatabase(ctx context.Context) error {
	return Bootstrap(ctx, s.URL(), s.creds)
}
