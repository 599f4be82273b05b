package dtc

type entry struct {
	code uint16
	sev  Severity
	desc string
}

// codes holds generic SAE J2012 codes with a plain-English description, sorted by
// code (Describe binary-searches it; a test checks the order).
var codes = [...]entry{
	{0x0010, Warning, "Intake (\"A\") camshaft position actuator circuit, bank 1"},                          // P0010
	{0x0011, Warning, "Intake (\"A\") camshaft timing over-advanced or system performance, bank 1"},         // P0011
	{0x0012, Warning, "Intake (\"A\") camshaft timing over-retarded, bank 1"},                               // P0012
	{0x0013, Warning, "Exhaust (\"B\") camshaft position actuator circuit, bank 1"},                         // P0013
	{0x0014, Warning, "Exhaust (\"B\") camshaft timing over-advanced or system performance, bank 1"},        // P0014
	{0x0016, Warning, "Crankshaft/camshaft position correlation, bank 1 sensor A"},                          // P0016
	{0x0017, Warning, "Crankshaft/camshaft position correlation, bank 1 sensor B"},                          // P0017
	{0x0018, Warning, "Crankshaft/camshaft position correlation, bank 2 sensor A"},                          // P0018
	{0x0020, Warning, "Intake (\"A\") camshaft position actuator circuit, bank 2"},                          // P0020
	{0x0021, Warning, "Intake (\"A\") camshaft timing over-advanced or system performance, bank 2"},         // P0021
	{0x0030, Warning, "Oxygen sensor heater control circuit, bank 1 sensor 1"},                              // P0030
	{0x0036, Warning, "Oxygen sensor heater control circuit, bank 1 sensor 2"},                              // P0036
	{0x0068, Warning, "Manifold pressure / mass air flow vs throttle position correlation"},                 // P0068
	{0x0087, Warning, "Fuel rail/system pressure too low"},                                                  // P0087
	{0x0088, Warning, "Fuel rail/system pressure too high"},                                                 // P0088
	{0x0100, Warning, "Mass or volume air flow sensor circuit"},                                             // P0100
	{0x0101, Warning, "Mass or volume air flow sensor circuit range/performance"},                           // P0101
	{0x0102, Warning, "Mass or volume air flow sensor circuit low input"},                                   // P0102
	{0x0103, Warning, "Mass or volume air flow sensor circuit high input"},                                  // P0103
	{0x0105, Warning, "Manifold absolute pressure / barometric pressure circuit"},                           // P0105
	{0x0106, Warning, "Manifold absolute pressure / barometric pressure circuit range/performance"},         // P0106
	{0x0107, Warning, "Manifold absolute pressure / barometric pressure circuit low input"},                 // P0107
	{0x0108, Warning, "Manifold absolute pressure / barometric pressure circuit high input"},                // P0108
	{0x0110, Warning, "Intake air temperature sensor circuit"},                                              // P0110
	{0x0111, Warning, "Intake air temperature sensor circuit range/performance"},                            // P0111
	{0x0112, Warning, "Intake air temperature sensor circuit low input"},                                    // P0112
	{0x0113, Warning, "Intake air temperature sensor circuit high input"},                                   // P0113
	{0x0115, Warning, "Engine coolant temperature sensor circuit"},                                          // P0115
	{0x0116, Warning, "Engine coolant temperature sensor circuit range/performance"},                        // P0116
	{0x0117, Warning, "Engine coolant temperature sensor circuit low input"},                                // P0117
	{0x0118, Warning, "Engine coolant temperature sensor circuit high input"},                               // P0118
	{0x0120, Warning, "Throttle/pedal position sensor/switch \"A\" circuit"},                                // P0120
	{0x0121, Warning, "Throttle/pedal position sensor/switch \"A\" circuit range/performance"},              // P0121
	{0x0122, Warning, "Throttle/pedal position sensor/switch \"A\" circuit low input"},                      // P0122
	{0x0123, Warning, "Throttle/pedal position sensor/switch \"A\" circuit high input"},                     // P0123
	{0x0125, Warning, "Coolant temperature insufficient for closed-loop fuel control"},                      // P0125
	{0x0128, Warning, "Coolant thermostat: coolant temperature below thermostat regulating temperature"},    // P0128
	{0x0130, Warning, "Oxygen sensor circuit, bank 1 sensor 1"},                                             // P0130
	{0x0131, Warning, "Oxygen sensor circuit low voltage, bank 1 sensor 1"},                                 // P0131
	{0x0132, Warning, "Oxygen sensor circuit high voltage, bank 1 sensor 1"},                                // P0132
	{0x0133, Warning, "Oxygen sensor circuit slow response, bank 1 sensor 1"},                               // P0133
	{0x0134, Warning, "Oxygen sensor circuit no activity detected, bank 1 sensor 1"},                        // P0134
	{0x0135, Warning, "Oxygen sensor heater circuit, bank 1 sensor 1"},                                      // P0135
	{0x0136, Warning, "Oxygen sensor circuit, bank 1 sensor 2"},                                             // P0136
	{0x0137, Warning, "Oxygen sensor circuit low voltage, bank 1 sensor 2"},                                 // P0137
	{0x0138, Warning, "Oxygen sensor circuit high voltage, bank 1 sensor 2"},                                // P0138
	{0x0139, Warning, "Oxygen sensor circuit slow response, bank 1 sensor 2"},                               // P0139
	{0x0140, Warning, "Oxygen sensor circuit no activity detected, bank 1 sensor 2"},                        // P0140
	{0x0141, Warning, "Oxygen sensor heater circuit, bank 1 sensor 2"},                                      // P0141
	{0x0150, Warning, "Oxygen sensor circuit, bank 2 sensor 1"},                                             // P0150
	{0x0151, Warning, "Oxygen sensor circuit low voltage, bank 2 sensor 1"},                                 // P0151
	{0x0152, Warning, "Oxygen sensor circuit high voltage, bank 2 sensor 1"},                                // P0152
	{0x0153, Warning, "Oxygen sensor circuit slow response, bank 2 sensor 1"},                               // P0153
	{0x0154, Warning, "Oxygen sensor circuit no activity detected, bank 2 sensor 1"},                        // P0154
	{0x0155, Warning, "Oxygen sensor heater circuit, bank 2 sensor 1"},                                      // P0155
	{0x0156, Warning, "Oxygen sensor circuit, bank 2 sensor 2"},                                             // P0156
	{0x0157, Warning, "Oxygen sensor circuit low voltage, bank 2 sensor 2"},                                 // P0157
	{0x0158, Warning, "Oxygen sensor circuit high voltage, bank 2 sensor 2"},                                // P0158
	{0x0161, Warning, "Oxygen sensor heater circuit, bank 2 sensor 2"},                                      // P0161
	{0x0171, Warning, "Fuel system too lean, bank 1"},                                                       // P0171
	{0x0172, Warning, "Fuel system too rich, bank 1"},                                                       // P0172
	{0x0174, Warning, "Fuel system too lean, bank 2"},                                                       // P0174
	{0x0175, Warning, "Fuel system too rich, bank 2"},                                                       // P0175
	{0x0180, Warning, "Fuel temperature sensor \"A\" circuit"},                                              // P0180
	{0x0190, Warning, "Fuel rail pressure sensor circuit"},                                                  // P0190
	{0x0191, Warning, "Fuel rail pressure sensor circuit range/performance"},                                // P0191
	{0x0192, Warning, "Fuel rail pressure sensor circuit low input"},                                        // P0192
	{0x0193, Warning, "Fuel rail pressure sensor circuit high input"},                                       // P0193
	{0x0200, Warning, "Injector circuit"},                                                                   // P0200
	{0x0201, Warning, "Injector circuit, cylinder 1"},                                                       // P0201
	{0x0202, Warning, "Injector circuit, cylinder 2"},                                                       // P0202
	{0x0203, Warning, "Injector circuit, cylinder 3"},                                                       // P0203
	{0x0204, Warning, "Injector circuit, cylinder 4"},                                                       // P0204
	{0x0205, Warning, "Injector circuit, cylinder 5"},                                                       // P0205
	{0x0206, Warning, "Injector circuit, cylinder 6"},                                                       // P0206
	{0x0207, Warning, "Injector circuit, cylinder 7"},                                                       // P0207
	{0x0208, Warning, "Injector circuit, cylinder 8"},                                                       // P0208
	{0x0217, Critical, "Engine over-temperature condition"},                                                 // P0217
	{0x0218, Critical, "Transmission fluid over-temperature condition"},                                     // P0218
	{0x0219, Critical, "Engine overspeed condition"},                                                        // P0219
	{0x0220, Warning, "Throttle/pedal position sensor/switch \"B\" circuit"},                                // P0220
	{0x0221, Warning, "Throttle/pedal position sensor/switch \"B\" circuit range/performance"},              // P0221
	{0x0222, Warning, "Throttle/pedal position sensor/switch \"B\" circuit low input"},                      // P0222
	{0x0223, Warning, "Throttle/pedal position sensor/switch \"B\" circuit high input"},                     // P0223
	{0x0230, Warning, "Fuel pump primary circuit"},                                                          // P0230
	{0x0234, Critical, "Turbocharger/supercharger overboost condition"},                                     // P0234
	{0x0299, Warning, "Turbocharger/supercharger underboost condition"},                                     // P0299
	{0x0300, Critical, "Random/multiple cylinder misfire detected"},                                         // P0300
	{0x0301, Critical, "Cylinder 1 misfire detected"},                                                       // P0301
	{0x0302, Critical, "Cylinder 2 misfire detected"},                                                       // P0302
	{0x0303, Critical, "Cylinder 3 misfire detected"},                                                       // P0303
	{0x0304, Critical, "Cylinder 4 misfire detected"},                                                       // P0304
	{0x0305, Critical, "Cylinder 5 misfire detected"},                                                       // P0305
	{0x0306, Critical, "Cylinder 6 misfire detected"},                                                       // P0306
	{0x0307, Critical, "Cylinder 7 misfire detected"},                                                       // P0307
	{0x0308, Critical, "Cylinder 8 misfire detected"},                                                       // P0308
	{0x0309, Critical, "Cylinder 9 misfire detected"},                                                       // P0309
	{0x0310, Critical, "Cylinder 10 misfire detected"},                                                      // P0310
	{0x0311, Critical, "Cylinder 11 misfire detected"},                                                      // P0311
	{0x0312, Critical, "Cylinder 12 misfire detected"},                                                      // P0312
	{0x0325, Warning, "Knock sensor 1 circuit (bank 1 or single sensor)"},                                   // P0325
	{0x0326, Warning, "Knock sensor 1 circuit range/performance (bank 1 or single sensor)"},                 // P0326
	{0x0327, Warning, "Knock sensor 1 circuit low input (bank 1 or single sensor)"},                         // P0327
	{0x0328, Warning, "Knock sensor 1 circuit high input (bank 1 or single sensor)"},                        // P0328
	{0x0330, Warning, "Knock sensor 2 circuit (bank 2)"},                                                    // P0330
	{0x0332, Warning, "Knock sensor 2 circuit low input (bank 2)"},                                          // P0332
	{0x0335, Critical, "Crankshaft position sensor \"A\" circuit"},                                          // P0335
	{0x0336, Critical, "Crankshaft position sensor \"A\" circuit range/performance"},                        // P0336
	{0x0340, Warning, "Camshaft position sensor \"A\" circuit (bank 1 or single sensor)"},                   // P0340
	{0x0341, Warning, "Camshaft position sensor \"A\" circuit range/performance (bank 1 or single sensor)"}, // P0341
	{0x0345, Warning, "Camshaft position sensor \"A\" circuit (bank 2)"},                                    // P0345
	{0x0351, Warning, "Ignition coil \"A\" primary/secondary circuit"},                                      // P0351
	{0x0352, Warning, "Ignition coil \"B\" primary/secondary circuit"},                                      // P0352
	{0x0353, Warning, "Ignition coil \"C\" primary/secondary circuit"},                                      // P0353
	{0x0354, Warning, "Ignition coil \"D\" primary/secondary circuit"},                                      // P0354
	{0x0355, Warning, "Ignition coil \"E\" primary/secondary circuit"},                                      // P0355
	{0x0356, Warning, "Ignition coil \"F\" primary/secondary circuit"},                                      // P0356
	{0x0380, Warning, "Glow plug/heater circuit \"A\""},                                                     // P0380
	{0x0400, Warning, "Exhaust gas recirculation (EGR) flow"},                                               // P0400
	{0x0401, Warning, "Exhaust gas recirculation flow insufficient"},                                        // P0401
	{0x0402, Warning, "Exhaust gas recirculation flow excessive"},                                           // P0402
	{0x0403, Warning, "Exhaust gas recirculation control circuit"},                                          // P0403
	{0x0404, Warning, "Exhaust gas recirculation control circuit range/performance"},                        // P0404
	{0x0405, Warning, "Exhaust gas recirculation sensor \"A\" circuit low"},                                 // P0405
	{0x0410, Warning, "Secondary air injection system"},                                                     // P0410
	{0x0411, Warning, "Secondary air injection system incorrect flow detected"},                             // P0411
	{0x0420, Warning, "Catalyst system efficiency below threshold, bank 1"},                                 // P0420
	{0x0421, Warning, "Warm-up catalyst efficiency below threshold, bank 1"},                                // P0421
	{0x0430, Warning, "Catalyst system efficiency below threshold, bank 2"},                                 // P0430
	{0x0440, Warning, "Evaporative emission (EVAP) system"},                                                 // P0440
	{0x0441, Warning, "Evaporative emission system incorrect purge flow"},                                   // P0441
	{0x0442, Warning, "Evaporative emission system leak detected (small leak)"},                             // P0442
	{0x0443, Warning, "Evaporative emission system purge control valve circuit"},                            // P0443
	{0x0446, Warning, "Evaporative emission system vent control circuit"},                                   // P0446
	{0x0449, Warning, "Evaporative emission system vent valve/solenoid circuit"},                            // P0449
	{0x0451, Warning, "Evaporative emission system pressure sensor range/performance"},                      // P0451
	{0x0452, Warning, "Evaporative emission system pressure sensor low input"},                              // P0452
	{0x0453, Warning, "Evaporative emission system pressure sensor high input"},                             // P0453
	{0x0455, Warning, "Evaporative emission system leak detected (large leak)"},                             // P0455
	{0x0456, Warning, "Evaporative emission system leak detected (very small leak)"},                        // P0456
	{0x0457, Warning, "Evaporative emission system leak detected (fuel cap loose or missing)"},              // P0457
	{0x0460, Warning, "Fuel level sensor \"A\" circuit"},                                                    // P0460
	{0x0461, Warning, "Fuel level sensor \"A\" circuit range/performance"},                                  // P0461
	{0x0480, Warning, "Cooling fan 1 control circuit"},                                                      // P0480
	{0x0481, Warning, "Cooling fan 2 control circuit"},                                                      // P0481
	{0x0496, Warning, "Evaporative emission system high purge flow"},                                        // P0496
	{0x0500, Warning, "Vehicle speed sensor \"A\""},                                                         // P0500
	{0x0501, Warning, "Vehicle speed sensor \"A\" range/performance"},                                       // P0501
	{0x0502, Warning, "Vehicle speed sensor \"A\" circuit low input"},                                       // P0502
	{0x0505, Warning, "Idle air control system"},                                                            // P0505
	{0x0506, Warning, "Idle air control system RPM lower than expected"},                                    // P0506
	{0x0507, Warning, "Idle air control system RPM higher than expected"},                                   // P0507
	{0x0520, Warning, "Engine oil pressure sensor/switch \"A\" circuit"},                                    // P0520
	{0x0521, Warning, "Engine oil pressure sensor/switch \"A\" range/performance"},                          // P0521
	{0x0522, Warning, "Engine oil pressure sensor/switch \"A\" circuit low"},                                // P0522
	{0x0523, Warning, "Engine oil pressure sensor/switch \"A\" circuit high"},                               // P0523
	{0x0524, Critical, "Engine oil pressure too low"},                                                       // P0524
	{0x0530, Info, "A/C refrigerant pressure sensor \"A\" circuit"},                                         // P0530
	{0x0532, Info, "A/C refrigerant pressure sensor \"A\" circuit low"},                                     // P0532
	{0x0533, Info, "A/C refrigerant pressure sensor \"A\" circuit high"},                                    // P0533
	{0x0562, Warning, "System voltage low"},                                                                 // P0562
	{0x0563, Warning, "System voltage high"},                                                                // P0563
	{0x0565, Info, "Cruise control \"on\" signal"},                                                          // P0565
	{0x0571, Info, "Brake switch \"A\" circuit (cruise control)"},                                           // P0571
	{0x0600, Warning, "Serial communication link"},                                                          // P0600
	{0x0601, Warning, "Internal control module memory checksum error"},                                      // P0601
	{0x0602, Warning, "Control module programming error"},                                                   // P0602
	{0x0603, Warning, "Internal control module keep-alive memory (KAM) error"},                              // P0603
	{0x0604, Warning, "Internal control module random access memory (RAM) error"},                           // P0604
	{0x0605, Warning, "Internal control module read-only memory (ROM) error"},                               // P0605
	{0x0606, Warning, "Control module processor"},                                                           // P0606
	{0x0620, Warning, "Generator control circuit"},                                                          // P0620
	{0x0622, Warning, "Generator field \"F\" terminal circuit"},                                             // P0622
	{0x0627, Warning, "Fuel pump \"A\" control circuit open"},                                               // P0627
	{0x0641, Warning, "Sensor reference voltage \"A\" circuit open"},                                        // P0641
	{0x0645, Info, "A/C clutch relay control circuit"},                                                      // P0645
	{0x0650, Warning, "Malfunction indicator lamp (MIL) control circuit"},                                   // P0650
	{0x0700, Warning, "Transmission control system (MIL request)"},                                          // P0700
	{0x0705, Warning, "Transmission range sensor \"A\" circuit (PRNDL input)"},                              // P0705
	{0x0706, Warning, "Transmission range sensor \"A\" circuit range/performance"},                          // P0706
	{0x0710, Warning, "Transmission fluid temperature sensor \"A\" circuit"},                                // P0710
	{0x0711, Warning, "Transmission fluid temperature sensor \"A\" circuit range/performance"},              // P0711
	{0x0715, Warning, "Turbine/input shaft speed sensor \"A\" circuit"},                                     // P0715
	{0x0716, Warning, "Turbine/input shaft speed sensor \"A\" circuit range/performance"},                   // P0716
	{0x0717, Warning, "Turbine/input shaft speed sensor \"A\" circuit no signal"},                           // P0717
	{0x0720, Warning, "Output shaft speed sensor circuit"},                                                  // P0720
	{0x0725, Warning, "Engine speed input circuit"},                                                         // P0725
	{0x0730, Warning, "Incorrect gear ratio"},                                                               // P0730
	{0x0731, Warning, "Gear 1 incorrect ratio"},                                                             // P0731
	{0x0732, Warning, "Gear 2 incorrect ratio"},                                                             // P0732
	{0x0733, Warning, "Gear 3 incorrect ratio"},                                                             // P0733
	{0x0734, Warning, "Gear 4 incorrect ratio"},                                                             // P0734
	{0x0735, Warning, "Gear 5 incorrect ratio"},                                                             // P0735
	{0x0740, Warning, "Torque converter clutch solenoid circuit"},                                           // P0740
	{0x0741, Warning, "Torque converter clutch solenoid circuit performance or stuck off"},                  // P0741
	{0x0742, Warning, "Torque converter clutch solenoid circuit stuck on"},                                  // P0742
	{0x0743, Warning, "Torque converter clutch solenoid circuit electrical"},                                // P0743
	{0x0748, Warning, "Pressure control solenoid \"A\" electrical"},                                         // P0748
	{0x0750, Warning, "Shift solenoid \"A\""},                                                               // P0750
	{0x0755, Warning, "Shift solenoid \"B\""},                                                               // P0755
	{0x0760, Warning, "Shift solenoid \"C\""},                                                               // P0760
	{0x0765, Warning, "Shift solenoid \"D\""},                                                               // P0765
	{0x0A0F, Warning, "Engine failed to start (hybrid)"},                                                    // P0A0F
	{0x0A7F, Warning, "Hybrid/EV battery pack deterioration"},                                               // P0A7F
	{0x0A80, Warning, "Replace hybrid/EV battery pack"},                                                     // P0A80
	{0x0A94, Warning, "DC/DC converter performance"},                                                        // P0A94
	{0x0AA6, Critical, "Hybrid/EV battery voltage system isolation fault"},                                  // P0AA6
	{0xC001, Critical, "High speed CAN communication bus"},                                                  // U0001
	{0xC073, Critical, "Control module communication bus \"A\" off"},                                        // U0073
	{0xC100, Critical, "Lost communication with ECM/PCM \"A\""},                                             // U0100
	{0xC101, Critical, "Lost communication with TCM"},                                                       // U0101
	{0xC111, Critical, "Lost communication with battery energy control module \"A\""},                       // U0111
	{0xC121, Critical, "Lost communication with anti-lock brake system (ABS) control module"},               // U0121
	{0xC140, Warning, "Lost communication with body control module"},                                        // U0140
	{0xC151, Critical, "Lost communication with restraints control module"},                                 // U0151
	{0xC155, Warning, "Lost communication with instrument panel cluster (IPC) control module"},              // U0155
	{0xC293, Critical, "Lost communication with hybrid/EV powertrain control module"},                       // U0293
}
