package ocpp

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"

	ocppbase "github.com/lorenzodonini/ocpp-go/ocpp"
	cs201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/authorization"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/availability"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/provisioning"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/remotecontrol"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/transactions"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/types"
	"github.com/lorenzodonini/ocpp-go/ocppj"
	"github.com/lorenzodonini/ocpp-go/ws"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/ocpp/wsmux"
)

// known201 lists the OCPP 2.0.1 actions; anything else is NotImplemented.
var known201 = setOf("Authorize", "BootNotification", "ClearedChargingLimit", "DataTransfer", "FirmwareStatusNotification",
	"Get15118EVCertificate", "GetCertificateStatus", "Heartbeat", "LogStatusNotification", "MeterValues", "NotifyChargingLimit",
	"NotifyCustomerInformation", "NotifyDisplayMessages", "NotifyEVChargingNeeds", "NotifyEVChargingSchedule", "NotifyEvent",
	"NotifyMonitoringReport", "NotifyReport", "PublishFirmwareStatusNotification", "ReportChargingProfiles",
	"ReservationStatusUpdate", "SecurityEventNotification", "SignCertificate", "StatusNotification", "TransactionEvent",
	"CancelReservation", "CertificateSigned", "ChangeAvailability", "ClearCache", "ClearChargingProfile", "ClearDisplayMessage",
	"ClearVariableMonitoring", "CostUpdated", "CustomerInformation", "DeleteCertificate", "GetBaseReport",
	"GetChargingProfiles", "GetCompositeSchedule", "GetDisplayMessages", "GetInstalledCertificateIds", "GetLocalListVersion",
	"GetLog", "GetMonitoringReport", "GetReport", "GetTransactionStatus", "GetVariables", "InstallCertificate",
	"PublishFirmware", "RequestStartTransaction", "RequestStopTransaction", "ReserveNow", "Reset", "SendLocalList",
	"SetChargingProfile", "SetDisplayMessage", "SetMonitoringBase", "SetMonitoringLevel", "SetNetworkProfile",
	"SetVariableMonitoring", "SetVariables", "TriggerMessage", "UnlockConnector", "UnpublishFirmware", "UpdateFirmware")

func (c *Central) start201() {
	v := c.Mux.Virtual(wsmux.V201)
	c.Mux.Known[wsmux.V201] = known201
	ep := ocppj.NewServer(v, nil, nil, authorization.Profile, availability.Profile, provisioning.Profile,
		transactions.Profile, remotecontrol.Profile)
	ep.SetInvalidMessageHook(func(_ ws.Channel, err *ocppbase.Error, _ string, _ []interface{}) *ocppbase.Error {
		if err.Code == ocppj.NotSupported && strings.HasPrefix(err.Description, "Unsupported feature") {
			return ocppbase.NewError(ocppj.NotImplemented, err.Description, err.MessageId)
		}
		return nil
	})
	c.cs201 = cs201.NewCSMS(ep, v)
	h := handler201{c}
	c.cs201.SetAuthorizationHandler(h)
	c.cs201.SetAvailabilityHandler(h)
	c.cs201.SetProvisioningHandler(h)
	c.cs201.SetTransactionsHandler(h)
	go c.cs201.Start(0, "")
}

type handler201 struct{ c *Central }

func (h handler201) OnAuthorize(string, *authorization.AuthorizeRequest) (*authorization.AuthorizeResponse, error) {
	return authorization.NewAuthorizationResponse(types.IdTokenInfo{Status: types.AuthorizationStatusAccepted}), nil
}

func (h handler201) OnHeartbeat(string, *availability.HeartbeatRequest) (*availability.HeartbeatResponse, error) {
	return availability.NewHeartbeatResponse(*types.NewDateTime(h.c.now())), nil
}

func status201(s availability.ConnectorStatus) uint8 {
	switch s {
	case availability.ConnectorStatusAvailable:
		return wire.ConnectorAvailable
	case availability.ConnectorStatusFaulted:
		return wire.ConnectorFaulted
	case availability.ConnectorStatusUnavailable:
		return wire.ConnectorUnavailable
	}
	return wire.ConnectorOccupied
}

func (h handler201) OnStatusNotification(id string, r *availability.StatusNotificationRequest) (*availability.StatusNotificationResponse, error) {
	if err := h.c.storeStatus(id, clampConnector(r.EvseID), status201(r.ConnectorStatus), r.Timestamp.Time); err != nil {
		return nil, internalErr(err)
	}
	return availability.NewStatusNotificationResponse(), nil
}

func (h handler201) OnBootNotification(string, *provisioning.BootNotificationRequest) (*provisioning.BootNotificationResponse, error) {
	return provisioning.NewBootNotificationResponse(types.NewDateTime(h.c.now()), int(h.c.HeartbeatInterval.Seconds()), provisioning.RegistrationStatusAccepted), nil
}

func (h handler201) OnNotifyReport(string, *provisioning.NotifyReportRequest) (*provisioning.NotifyReportResponse, error) {
	return provisioning.NewNotifyReportResponse(), nil
}

func meter201(mvs []types.MeterValue) (m meter) {
	for _, mv := range mvs {
		for _, sv := range mv.SampledValue {
			v := sv.Value
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			unit := ""
			if sv.UnitOfMeasure != nil {
				unit = sv.UnitOfMeasure.Unit
				if sv.UnitOfMeasure.Multiplier != nil {
					v *= math.Pow10(*sv.UnitOfMeasure.Multiplier)
				}
			}
			switch sv.Measurand {
			case "", types.MeasurandEnergyActiveImportRegister:
				m.energyWh, m.hasEnergy = scale(v, unit), true
			case types.MeasurandPowerActiveImport:
				m.powerW, m.hasPowr = scale(v, unit), true
			case types.MeasurandSoC:
				m.soc, m.hasSoC = v, true
			}
		}
	}
	return m
}

func (h handler201) OnTransactionEvent(id string, r *transactions.TransactionEventRequest) (*transactions.TransactionEventResponse, error) {
	resp := &transactions.TransactionEventResponse{}
	if r.IDToken != nil {
		resp.IDTokenInfo = &types.IdTokenInfo{Status: types.AuthorizationStatusAccepted}
	}
	tx := r.TransactionInfo.TransactionID
	t, known, err := h.c.lookup(id, tx)
	if err != nil {
		return nil, internalErr(err)
	}
	var kind uint8
	switch r.EventType {
	case transactions.TransactionEventStarted:
		kind = wire.SessionStarted
		if known && t.Started {
			h.c.replay("session")
			return resp, nil
		}
	case transactions.TransactionEventUpdated:
		kind = wire.SessionUpdated
	default:
		kind = wire.SessionStopped
	}
	seq := sessionSeq(kind, uint64(r.SequenceNo))
	if kind == wire.SessionUpdated {
		// seqNo restarts when a station reboots mid-transaction, and its
		// clock is untrusted: an Updated event is a replay only when the
		// same reading (seqNo, timestamp, meter values) was seen for this
		// transaction; offline and the trigger may differ on a resend.
		reading, err := json.Marshal(r.MeterValue)
		if err != nil {
			return nil, internalErr(err)
		}
		seq = readingSeq(tx, []byte(strconv.Itoa(r.SequenceNo)), []byte(strconv.FormatInt(r.Timestamp.UnixMilli(), 10)), reading)
		if known && t.seen(seq) {
			h.c.replay("session")
			return resp, nil
		}
	} else if known && t.Stopped {
		// A stopped transaction is never restarted or stopped again.
		h.c.replay("session")
		return resp, nil
	}
	next := txn{Started: true, Stopped: kind == wire.SessionStopped, LastSeq: seq}
	if kind == wire.SessionUpdated {
		next.LastSeq, next.Seen = 0, []uint64{seq}
	}
	if r.Evse != nil {
		t.Connector = clampConnector(r.Evse.ID)
		next.Connector = t.Connector
	}
	if r.IDToken != nil && r.IDToken.IdToken != "" {
		t.IDTag = r.IDToken.IdToken
		next.IDTag = t.IDTag
	}
	m := meter201(r.MeterValue)
	if kind == wire.SessionStarted && m.hasEnergy && !t.HasStart {
		t.MeterStart = m.energyWh
		next.MeterStart, next.HasStart = m.energyWh, true
	}
	s := wire.ChargingSession{Seq: seq, TimeMs: r.Timestamp.UnixMilli(), Kind: kind,
		SessionID: wire.Ident(tx), Connector: t.Connector, IDTag: wire.Ident(t.IDTag), VIN: claimedVIN(t.IDTag), PowerW: m.powerW, SoCPct: m.soc}
	if m.hasEnergy {
		s.EnergyWh = max(m.energyWh-t.MeterStart, 0)
	}
	if known && t.Stopped {
		// A new Updated of an ended transaction: kept as a dead letter
		// (session_stopped), the session is not resurrected.
		err = h.c.deadLetterSession(id, s)
	} else {
		err = h.c.storeSession(id, s)
	}
	if err != nil {
		return nil, internalErr(err)
	}
	if err := h.c.setTxn(id, tx, next); err != nil {
		return nil, internalErr(err)
	}
	return resp, nil
}

// remote control results arrive through the command API (commands.go).
var _ = remotecontrol.RequestStartTransactionFeatureName
