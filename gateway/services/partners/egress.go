package partners

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// Egress errors: why a webhook delivery was refused before or instead of
// reaching the partner's endpoint.
var (
	// ErrAddressRefused: the endpoint's address (the IP the socket was about
	// to connect to, after DNS) is loopback, private, link-local (cloud
	// metadata), unspecified, multicast or otherwise internal, and not in
	// the operator's allow-list.
	ErrAddressRefused = errors.New("webhook: destination address refused")
	// ErrRedirectRefused: the endpoint answered with a redirect. Redirects
	// are never followed: the trigger goes to the registered URL only.
	ErrRedirectRefused = errors.New("webhook: redirect refused")
	// ErrSchemeRefused: the endpoint URL is not https.
	ErrSchemeRefused = errors.New("webhook: only https endpoints")
)

// Outcome labels of a delivery attempt: the only thing a partner learns
// about it (Delivery.LastError). They name the partner endpoint's own
// answer in coarse classes and never carry an internal status code,
// address or error text.
const (
	OutcomeDelivered       = "delivered"
	OutcomeHTTP4xx         = "http_4xx"
	OutcomeHTTP5xx         = "http_5xx"
	OutcomeHTTPOther       = "http_other" // 1xx or a non-standard code
	OutcomeRedirectRefused = "redirect_refused"
	OutcomeAddressRefused  = "address_refused"
	OutcomeSchemeRefused   = "scheme_refused"
	OutcomeTimeout         = "timeout"
	OutcomeTLSError        = "tls_error"
	OutcomeConnectError    = "connect_error" // DNS failure, connection refused or reset
)

// Egress is where webhook deliveries may connect. The zero value allows
// only public unicast addresses over https.
type Egress struct {
	// Allow lists internal ranges an operator permits anyway (e.g. a
	// partner reached over a private link). Empty: none.
	Allow []netip.Prefix
	// RootCAs verifies the endpoints' certificates (nil: system roots).
	RootCAs *x509.CertPool
	// LookupIP resolves a host name (nil: the system resolver). A test hook;
	// whatever it answers is checked again at connect time.
	LookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
}

// denied are the ranges refused unless allow-listed, besides what the
// netip predicates in Refused catch (loopback, private, link-local,
// multicast, unspecified).
var denied = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT (some clouds' metadata)
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64: embeds an IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"), // local NAT64
	netip.MustParsePrefix("100::/64"),       // discard-only
	netip.MustParsePrefix("2001::/32"),      // Teredo: embeds an IPv4 address
	netip.MustParsePrefix("2002::/16"),      // 6to4: embeds an IPv4 address
	netip.MustParsePrefix("fec0::/10"),      // deprecated site-local
	netip.MustParsePrefix("fd00:ec2::/32"),  // AWS IMDS over IPv6 (also inside fc00::/7)
	netip.MustParsePrefix("169.254.0.0/16"), // link-local incl. 169.254.169.254 metadata
	netip.MustParsePrefix("fe80::/10"),      // link-local
	netip.MustParsePrefix("fc00::/7"),       // unique local incl. fd00::/8
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("::1/128"),        // loopback
	netip.MustParsePrefix("::/128"),         // unspecified
	netip.MustParsePrefix("255.255.255.255/32"),
}

// Refused reports whether a connection to ip must be refused.
func (e Egress) Refused(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range e.Allow {
		if p.Contains(ip) {
			return false
		}
	}
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() || ip.IsMulticast() ||
		ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range denied {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// control runs on every socket just before connect(2), with the numeric
// address the kernel will connect to: the check cannot be bypassed by DNS
// answers that change between a lookup and the connection (rebinding).
func (e Egress) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable %q", ErrAddressRefused, address)
	}
	if e.Refused(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrAddressRefused, ap.Addr())
	}
	return nil
}

// Client returns the HTTP client of webhook deliveries: https only, no
// proxy from the environment, no redirects followed, every connection's
// address checked by control, timeout per request.
func (e Egress) Client(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: e.control}
	tr := &http.Transport{
		Proxy: nil, // a proxy would make the checked address the proxy's
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return e.dial(ctx, d, network, addr)
		},
		TLSClientConfig:       &tls.Config{RootCAs: e.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // the 3xx is the answer: a failure
		},
	}
}

// dial resolves addr's host (LookupIP hook or the system resolver) and
// connects to each address in turn; d's Control hook checks each one.
func (e Egress) dial(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if e.LookupIP != nil {
		ips, err = e.LookupIP(ctx, host)
		if err != nil {
			return nil, err
		}
	} else {
		ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
	}
	if len(ips) == 0 {
		return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	var first error
	for _, ip := range ips {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

// checkURL refuses endpoints that are not https.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return ErrSchemeRefused
	}
	return nil
}

// outcome maps a delivery attempt's result to its label.
func outcome(code int, err error) string {
	var (
		tlsRec   tls.RecordHeaderError
		tlsAlert tls.AlertError
		tlsVer   *tls.CertificateVerificationError
		unknownA x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invalid  x509.CertificateInvalidError
		netErr   net.Error
	)
	switch {
	case errors.Is(err, ErrAddressRefused):
		return OutcomeAddressRefused
	case errors.Is(err, ErrRedirectRefused):
		return OutcomeRedirectRefused
	case errors.Is(err, ErrSchemeRefused):
		return OutcomeSchemeRefused
	case errors.As(err, &tlsRec), errors.As(err, &tlsAlert), errors.As(err, &tlsVer),
		errors.As(err, &unknownA), errors.As(err, &hostErr), errors.As(err, &invalid):
		return OutcomeTLSError
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return OutcomeTimeout
	case err != nil && code == 0:
		return OutcomeConnectError
	case code >= 200 && code <= 299:
		return OutcomeDelivered
	case code >= 300 && code <= 399:
		return OutcomeRedirectRefused
	case code >= 400 && code <= 499:
		return OutcomeHTTP4xx
	case code >= 500 && code <= 599:
		return OutcomeHTTP5xx
	}
	return OutcomeHTTPOther
}
