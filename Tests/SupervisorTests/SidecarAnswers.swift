/// Answers of a real sidecar, captured from `capstan agent` and its proxy in a test mesh (the client pod of
/// EndToEndTests' ``MeshCluster``): the bodies as they came, except where marked trimmed (long lists cut to
/// two entries, certificates' base64 and transport sockets left out of the config dump).
enum SidecarAnswers {
    /// `GET :15020/healthz/ready` of a ready agent: 200.
    static let ready = "ready\n"

    /// `GET :15020/healthz/ready` of an agent whose control plane is gone before its first certificate: 503.
    static let notReady = "not ready: proxy not LIVE (admin API not answering); LDS not accepted yet; CDS not accepted yet; no valid certificate\n"

    /// `GET :15020/stats/prometheus` of a ready agent: the agent's families, then the proxy's (trimmed).
    static let readyMetrics = #"""
        # HELP capstan_agent_proxy_restarts_total Restarts of the proxy child after it crashed.
        # TYPE capstan_agent_proxy_restarts_total counter
        capstan_agent_proxy_restarts_total 0
        # HELP capstan_agent_certificate_expiry_seconds Seconds until the workload certificate expires.
        # TYPE capstan_agent_certificate_expiry_seconds gauge
        capstan_agent_certificate_expiry_seconds 86399
        # HELP capstan_agent_ready 1 when /healthz/ready answers 200.
        # TYPE capstan_agent_ready gauge
        capstan_agent_ready 1
        # HELP capstan_agent_xds_upstream_connected 1 while the xDS relay's stream to the control plane is up.
        # TYPE capstan_agent_xds_upstream_connected gauge
        capstan_agent_xds_upstream_connected 1
        # TYPE envoy_server_state gauge
        envoy_server_state 0
        # TYPE envoy_server_healthcheck_failed gauge
        envoy_server_healthcheck_failed 0
        # TYPE envoy_listener_manager_lds_update_attempt counter
        envoy_listener_manager_lds_update_attempt 1
        # TYPE envoy_listener_manager_lds_update_success counter
        envoy_listener_manager_lds_update_success 1
        # TYPE envoy_listener_manager_lds_update_rejected counter
        envoy_listener_manager_lds_update_rejected 0
        # TYPE envoy_cluster_manager_cds_update_attempt counter
        envoy_cluster_manager_cds_update_attempt 1
        # TYPE envoy_cluster_manager_cds_update_success counter
        envoy_cluster_manager_cds_update_success 1
        # TYPE envoy_cluster_manager_cds_update_rejected counter
        envoy_cluster_manager_cds_update_rejected 0
        # TYPE envoy_control_plane_connected_state gauge
        envoy_control_plane_connected_state 1
        # TYPE envoy_cluster_upstream_cx_total counter
        envoy_cluster_upstream_cx_total{envoy_cluster_name="InboundPassthroughCluster"} 0
        envoy_cluster_upstream_cx_total{envoy_cluster_name="PassthroughCluster"} 0

        """#

    /// `GET :15020/stats/prometheus` of the agent without a proxy (no certificate yet): the agent's alone.
    static let notReadyMetrics = #"""
        # HELP capstan_agent_proxy_restarts_total Restarts of the proxy child after it crashed.
        # TYPE capstan_agent_proxy_restarts_total counter
        capstan_agent_proxy_restarts_total 0
        # HELP capstan_agent_ready 1 when /healthz/ready answers 200.
        # TYPE capstan_agent_ready gauge
        capstan_agent_ready 0
        # HELP capstan_agent_xds_upstream_connected 1 while the xDS relay's stream to the control plane is up.
        # TYPE capstan_agent_xds_upstream_connected gauge
        capstan_agent_xds_upstream_connected 0

        """#

    /// `GET :15000/ready` of a LIVE proxy.
    static let proxyReady = "LIVE\n"

    /// `GET :15000/listeners`.
    static let listeners = #"""
        virtualOutbound::[::]:15001
        virtualInbound::[::]:15006

        """#

    /// `GET :15000/config_dump?include_eds` after a second listener push (LDS 2, the rest 1), trimmed.
    static let configDump = #"""
        {
          "configs" : [
            {
              "@type" : "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
              "dynamic_active_clusters" : [
                {
                  "cluster" : {
                    "endpoints" : [
                      "192.0.2.10:80"
                    ],
                    "name" : "outbound|9080|v1|payments.shop.svc.cluster.local",
                    "type" : "EDS"
                  },
                  "last_updated" : "2026-11-21T12:00:53Z",
                  "version_info" : "1"
                },
                {
                  "cluster" : {
                    "endpoints" : [
                      "192.0.2.11:80"
                    ],
                    "name" : "outbound|9080|v2|payments.shop.svc.cluster.local",
                    "type" : "EDS"
                  },
                  "last_updated" : "2026-11-21T12:00:53Z",
                  "version_info" : "1"
                }
              ],
              "dynamic_warming_clusters" : [],
              "static_clusters" : [
                {
                  "cluster" : {
                    "endpoints" : [
                      "/tmp/cst14453x1/client/sockets/SDS"
                    ],
                    "name" : "sds-grpc",
                    "type" : "STATIC"
                  }
                }
              ],
              "version_info" : "1"
            },
            {
              "@type" : "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
              "dynamic_endpoint_configs" : [
                {
                  "endpoint_config" : {
                    "@type" : "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                    "cluster_name" : "outbound|9080|v1|payments.shop.svc.cluster.local",
                    "endpoints" : [
                      {
                        "lb_endpoints" : [
                          {
                            "endpoint" : {
                              "address" : {
                                "socket_address" : {
                                  "address" : "192.0.2.10",
                                  "port_value" : 80
                                }
                              }
                            }
                          }
                        ]
                      }
                    ]
                  },
                  "last_updated" : "2026-11-21T12:00:53Z",
                  "version_info" : "1"
                },
                {
                  "endpoint_config" : {
                    "@type" : "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                    "cluster_name" : "outbound|9080|v2|payments.shop.svc.cluster.local",
                    "endpoints" : [
                      {
                        "lb_endpoints" : [
                          {
                            "endpoint" : {
                              "address" : {
                                "socket_address" : {
                                  "address" : "192.0.2.11",
                                  "port_value" : 80
                                }
                              }
                            }
                          }
                        ]
                      }
                    ]
                  },
                  "last_updated" : "2026-11-21T12:00:53Z",
                  "version_info" : "1"
                }
              ],
              "static_endpoint_configs" : [
                {
                  "endpoint_config" : {
                    "@type" : "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                    "cluster_name" : "sds-grpc",
                    "endpoints" : [
                      {
                        "lb_endpoints" : [
                          {
                            "endpoint" : {
                              "address" : {
                                "pipe" : {
                                  "path" : "/tmp/cst14453x1/client/sockets/SDS"
                                }
                              }
                            }
                          }
                        ]
                      }
                    ]
                  }
                }
              ]
            },
            {
              "@type" : "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
              "dynamic_listeners" : [
                {
                  "active_state" : {
                    "last_updated" : "2026-11-21T12:00:53Z",
                    "listener" : {
                      "address" : {
                        "socket_address" : {
                          "address" : "0.0.0.0",
                          "port_value" : 15006
                        }
                      },
                      "filter_chains" : [
                        {
                          "clusters" : [
                            "InboundPassthroughCluster"
                          ],
                          "name" : "InboundPassthroughFilterChain-tls",
                          "prefix_ranges" : [],
                          "transport_protocol" : "tls"
                        }
                      ],
                      "listener_filters" : [
                        "envoy.filters.listener.tls_inspector"
                      ],
                      "name" : "virtualInbound",
                      "traffic_direction" : "INBOUND",
                      "transparent" : false
                    },
                    "version_info" : "1"
                  },
                  "name" : "virtualInbound"
                },
                {
                  "active_state" : {
                    "last_updated" : "2026-11-21T12:00:54Z",
                    "listener" : {
                      "address" : {
                        "socket_address" : {
                          "address" : "0.0.0.0",
                          "port_value" : 15001
                        }
                      },
                      "default_filter_chain" : {
                        "clusters" : [
                          "PassthroughCluster"
                        ],
                        "name" : "PassthroughFilterChain",
                        "prefix_ranges" : []
                      },
                      "filter_chains" : [
                        {
                          "clusters" : [
                            "outbound|9080|v1|payments.shop.svc.cluster.local",
                            "outbound|9080|v2|payments.shop.svc.cluster.local"
                          ],
                          "destination_port" : 9080,
                          "name" : "payments.shop.svc.cluster.local:9080",
                          "prefix_ranges" : [
                            "198.51.100.200/32"
                          ]
                        }
                      ],
                      "name" : "virtualOutbound",
                      "traffic_direction" : "OUTBOUND",
                      "transparent" : false
                    },
                    "version_info" : "2"
                  },
                  "name" : "virtualOutbound"
                }
              ],
              "static_listeners" : [],
              "version_info" : "2"
            },
            {
              "@type" : "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
              "dynamic_active_secrets" : [
                {
                  "expiration_time" : "2036-11-18T12:00:54Z",
                  "last_updated" : "2026-11-21T12:00:53Z",
                  "name" : "ROOTCA",
                  "secret" : {
                    "@type" : "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                    "name" : "ROOTCA",
                    "validation_context" : {
                      "trusted_ca" : {
                        "inline_bytes" : "[trimmed]"
                      }
                    }
                  },
                  "version_info" : "1"
                },
                {
                  "expiration_time" : "2026-11-22T12:00:54Z",
                  "identity" : "spiffe://cluster.local/ns/shop/sa/client",
                  "last_updated" : "2026-11-21T12:00:53Z",
                  "name" : "default",
                  "secret" : {
                    "@type" : "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                    "name" : "default",
                    "tls_certificate" : {
                      "certificate_chain" : {
                        "inline_bytes" : "[trimmed]"
                      },
                      "private_key" : {
                        "inline_string" : "[redacted]"
                      }
                    }
                  },
                  "version_info" : "1"
                }
              ]
            }
          ]
        }

        """#

    /// `GET :15000/certs`.
    static let certs = #"""
        {
          "certificates" : [
            {
              "ca_cert" : [
                {
                  "days_until_expiration" : "3649",
                  "expiration_time" : "2036-11-18T12:00:54Z",
                  "path" : "<inline>",
                  "serial_number" : "a934559e4ee7871f6c51211164c5961097fb79ad",
                  "subject_alt_names" : [

                  ],
                  "valid_from" : "2026-11-21T11:59:54Z"
                }
              ],
              "cert_chain" : [
                {
                  "days_until_expiration" : "0",
                  "expiration_time" : "2026-11-22T12:00:54Z",
                  "path" : "<inline>",
                  "serial_number" : "24ad4513fdbf960c7eb00f4c5e23e35fecd55b5c",
                  "subject_alt_names" : [
                    {
                      "uri" : "spiffe://cluster.local/ns/shop/sa/client"
                    }
                  ],
                  "valid_from" : "2026-11-21T11:59:54Z"
                }
              ]
            }
          ]
        }

        """#
}
