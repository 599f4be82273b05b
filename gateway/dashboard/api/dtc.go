package api

import "github.com/telegate/telegate/decoders/dtc"

func describe(code string) (desc, severity string) {
	c, err := dtc.Parse(code)
	if err != nil {
		return "", dtc.Warning.String()
	}
	d, sev, ok := dtc.Describe(c)
	if !ok {
		d = "Manufacturer-specific or uncommon code"
	}
	return d, sev.String()
}

func statusName(s int) string {
	if s < 0 || s > 255 {
		return "unknown"
	}
	return dtc.StatusName(uint8(s))
}
