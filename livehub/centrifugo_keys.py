"""The option names of Centrifugo v6's configuration, by section: how livehub tells a Centrifugo
option it does not support (refused unless it is switched off) from a typo (refused, with a
suggestion). Only the sections livehub itself has are listed; ``[]`` stands for any list item.
"""

from __future__ import annotations

#: section path -> its option names (space-separated), as Centrifugo v6 spells them.
CENTRIFUGO_KEYS: dict[str, frozenset[str]] = {
    "": frozenset(
        (
            "admin broker channel client consumers controller debug emulation "
            "enable_unreleased_features engine graphite grpc_api health http_api http_server "
            "http_stream init log map_broker node opentelemetry pid_file presence_manager prometheus "
            "proxies rpc shared_poll shutdown sse swagger uni_grpc uni_http_stream uni_sse "
            "uni_websocket usage_stats websocket webtransport"
        ).split()
    ),
    "admin": frozenset(
        "enabled external handler_prefix insecure password secret web_path web_proxy_address".split()
    ),
    "broker": frozenset("enabled nats postgres redis redisnats type".split()),
    "broker.postgres": frozenset(
        (
            "binary_data cleanup_interval dsn idempotent_result_ttl notify_dsn num_shards outbox "
            "partition_lookahead_days partition_retention_days pool_size skip_schema_init "
            "stream_retention table_prefix tls use_notify"
        ).split()
    ),
    "consumers[]": frozenset(
        (
            "aws_sqs azure_service_bus enabled google_pub_sub kafka name nats_jetstream postgresql "
            "redis_stream type"
        ).split()
    ),
    "consumers[].postgresql": frozenset(
        (
            "dsn num_partitions outbox_table_name partition_notification_channel partition_notification_dsn "
            "partition_poll_interval partition_select_limit tls use_try_lock"
        ).split()
    ),
    "broker.nats": frozenset("allow_wildcards dial_timeout prefix raw_mode tls url write_timeout".split()),
    "broker.redis": frozenset(
        (
            "address client_name cluster_address connect_timeout db force_resp2 history_use_lists "
            "io_timeout password prefix replica_client sentinel_address sentinel_client_name "
            "sentinel_master_name sentinel_password sentinel_tls sentinel_user tls user"
        ).split()
    ),
    "channel": frozenset(
        (
            "history_meta_ttl max_length namespace_boundary namespaces private_prefix proxy "
            "publication_data_format user_boundary user_separator without_namespace"
        ).split()
    ),
    "channel.namespaces[]": frozenset(
        (
            "allow_history_for_anonymous allow_history_for_client allow_history_for_subscriber "
            "allow_positioning allow_presence_for_anonymous allow_presence_for_client "
            "allow_presence_for_subscriber allow_publish_for_anonymous allow_publish_for_client "
            "allow_publish_for_subscriber allow_recovery allow_subscribe_for_anonymous "
            "allow_subscribe_for_client allow_tags_filter allow_user_limited_channels "
            "allowed_delta_types auto_cache_recover channel_regex delta_publish force_positioning "
            "force_push_join_leave force_recovery force_recovery_mode history_meta_ttl history_size "
            "history_ttl join_leave map map_clients_presence_channel_prefix "
            "map_users_presence_channel_prefix name presence publication_data_format "
            "publish_proxy_enabled publish_proxy_name shared_poll sub_refresh_proxy_enabled "
            "sub_refresh_proxy_name subscribe_proxy_enabled subscribe_proxy_name "
            "subscribe_stream_proxy_bidirectional subscribe_stream_proxy_enabled "
            "subscribe_stream_proxy_name subscription_type"
        ).split()
    ),
    "channel.without_namespace": frozenset(
        (
            "allow_history_for_anonymous allow_history_for_client allow_history_for_subscriber "
            "allow_positioning allow_presence_for_anonymous allow_presence_for_client "
            "allow_presence_for_subscriber allow_publish_for_anonymous allow_publish_for_client "
            "allow_publish_for_subscriber allow_recovery allow_subscribe_for_anonymous "
            "allow_subscribe_for_client allow_tags_filter allow_user_limited_channels "
            "allowed_delta_types auto_cache_recover channel_regex delta_publish force_positioning "
            "force_push_join_leave force_recovery force_recovery_mode history_meta_ttl history_size "
            "history_ttl join_leave map map_clients_presence_channel_prefix "
            "map_users_presence_channel_prefix presence publication_data_format publish_proxy_enabled "
            "publish_proxy_name shared_poll sub_refresh_proxy_enabled sub_refresh_proxy_name "
            "subscribe_proxy_enabled subscribe_proxy_name subscribe_stream_proxy_bidirectional "
            "subscribe_stream_proxy_enabled subscribe_stream_proxy_name subscription_type"
        ).split()
    ),
    "channel.namespaces[].map": frozenset(
        (
            "allow_publish_for_anonymous allow_publish_for_client allow_publish_for_subscriber "
            "allow_remove_for_anonymous allow_remove_for_client allow_remove_for_subscriber client_key "
            "default_page_size key_ttl live_transition_max_publication_limit max_page_size meta_ttl "
            "min_page_size mode publish_proxy_enabled publish_proxy_name remove_client_on_unsubscribe "
            "remove_proxy_enabled remove_proxy_name stream_size stream_ttl subscribe_catch_up_timeout"
        ).split()
    ),
    "channel.without_namespace.map": frozenset(
        (
            "allow_publish_for_anonymous allow_publish_for_client allow_publish_for_subscriber "
            "allow_remove_for_anonymous allow_remove_for_client allow_remove_for_subscriber client_key "
            "default_page_size key_ttl live_transition_max_publication_limit max_page_size meta_ttl "
            "min_page_size mode publish_proxy_enabled publish_proxy_name remove_client_on_unsubscribe "
            "remove_proxy_enabled remove_proxy_name stream_size stream_ttl subscribe_catch_up_timeout"
        ).split()
    ),
    "client": frozenset(
        (
            "allow_anonymous_connect_without_token allowed_origins channel_limit "
            "channel_position_check_delay channel_position_max_time_lag concurrency "
            "connect_code_to_unidirectional_disconnect connect_include_server_time connection_limit "
            "connection_rate_limit disallow_anonymous_connection_tokens expired_close_delay "
            "expired_sub_close_delay history_max_publication_limit insecure "
            "insecure_skip_token_signature_verify ping_interval pong_timeout presence_update_interval "
            "proxy queue_max_size recovery_max_publication_limit stale_close_delay "
            "subscribe_to_user_personal_channel subscription_token token user_connection_limit "
            "user_id_http_header"
        ).split()
    ),
    "client.connect_code_to_unidirectional_disconnect": frozenset("enabled transforms".split()),
    "client.connect_code_to_unidirectional_disconnect.transforms[]": frozenset("code to".split()),
    "client.connect_code_to_unidirectional_disconnect.transforms[].to": frozenset("code reason".split()),
    "client.proxy.connect": frozenset("emulated_headers grpc".split()),
    "client.proxy.connect.http": frozenset("status_to_code_transforms tls".split()),
    "client.proxy.refresh": frozenset("emulated_headers grpc".split()),
    "client.proxy.refresh.http": frozenset("status_to_code_transforms tls".split()),
    "channel.proxy.subscribe": frozenset("emulated_headers grpc".split()),
    "channel.proxy.subscribe.http": frozenset("status_to_code_transforms tls".split()),
    "channel.proxy.publish": frozenset("emulated_headers grpc".split()),
    "channel.proxy.publish.http": frozenset("status_to_code_transforms tls".split()),
    "channel.proxy.sub_refresh": frozenset("emulated_headers grpc".split()),
    "channel.proxy.sub_refresh.http": frozenset("status_to_code_transforms tls".split()),
    "channel.proxy.shared_poll_refresh": frozenset("emulated_headers grpc".split()),
    "channel.proxy.shared_poll_refresh.http": frozenset("status_to_code_transforms tls".split()),
    "rpc.proxy": frozenset("emulated_headers grpc".split()),
    "rpc.proxy.http": frozenset("status_to_code_transforms tls".split()),
    "proxies[]": frozenset("emulated_headers grpc".split()),
    "proxies[].http": frozenset("status_to_code_transforms tls".split()),
    "channel.proxy": frozenset("map_publish map_remove subscribe_stream".split()),
    "rpc": frozenset("ping".split()),
    "shared_poll": frozenset("concurrency_limit".split()),
    "channel.without_namespace.shared_poll": frozenset(
        "channel_shutdown_delay publish_enabled track_expired_extra_delay".split()
    ),
    "channel.namespaces[].shared_poll": frozenset(
        "channel_shutdown_delay publish_enabled track_expired_extra_delay".split()
    ),
    "client.rate_limit": frozenset("client_command user_command".split()),
    "client.subscribe_to_user_personal_channel": frozenset(
        "enabled personal_channel_namespace single_connection".split()
    ),
    "client.subscription_token": frozenset(
        (
            "audience audience_regex ecdsa_public_key enabled hmac_previous_secret_key "
            "hmac_previous_secret_key_valid_until hmac_secret_key "
            "insecure_skip_jwks_endpoint_safety_check issuer issuer_regex jwks_public_endpoint "
            "rsa_public_key user_id_claim"
        ).split()
    ),
    "client.token": frozenset(
        (
            "audience audience_regex ecdsa_public_key hmac_previous_secret_key "
            "hmac_previous_secret_key_valid_until hmac_secret_key "
            "insecure_skip_jwks_endpoint_safety_check issuer issuer_regex jwks_public_endpoint "
            "rsa_public_key user_id_claim"
        ).split()
    ),
    "consumers[].nats_jetstream": frozenset(
        (
            "credentials_file deliver_policy durable_consumer_name max_ack_pending method_header password "
            "publication_data_mode stream_name subjects tls token url use_existing_consumer username"
        ).split()
    ),
    "consumers[].nats_jetstream.publication_data_mode": frozenset(
        (
            "channels_header delta_header enabled idempotency_key_header tags_header_prefix "
            "version_epoch_header version_header"
        ).split()
    ),
    "consumers[].redis_stream": frozenset(
        (
            "address client_name cluster_address connect_timeout consumer_group db force_resp2 "
            "io_timeout method_value num_workers password payload_value prefix "
            "publication_data_mode replica_client sentinel_address sentinel_client_name "
            "sentinel_master_name sentinel_password sentinel_tls sentinel_user streams tls user "
            "visibility_timeout"
        ).split()
    ),
    "consumers[].redis_stream.publication_data_mode": frozenset(
        (
            "channels_value delta_value enabled idempotency_key_value tags_value_prefix "
            "version_epoch_value version_value"
        ).split()
    ),
    "engine": frozenset("redis type".split()),
    "engine.redis": frozenset(
        (
            "address client_name cluster_address connect_timeout db force_resp2 history_use_lists "
            "io_timeout password prefix presence_hash_field_ttl presence_ttl presence_user_mapping "
            "replica_client sentinel_address sentinel_client_name sentinel_master_name "
            "sentinel_password sentinel_tls sentinel_user tls user"
        ).split()
    ),
    "engine.redis.tls": frozenset(
        "cert_pem client_ca_pem enabled insecure_skip_verify key_pem server_ca_pem server_name".split()
    ),
    "health": frozenset("enabled handler_prefix".split()),
    "http_api": frozenset("disabled error_mode external handler_prefix insecure key".split()),
    "http_server": frozenset(
        (
            "address h2c_external http3 internal_address internal_port internal_tls port tls "
            "tls_autocert tls_external"
        ).split()
    ),
    "http_server.tls": frozenset(
        "cert_pem client_ca_pem enabled insecure_skip_verify key_pem server_ca_pem server_name".split()
    ),
    "log": frozenset("file level".split()),
    "node": frozenset("info_metrics_aggregate_interval name".split()),
    "presence_manager": frozenset("enabled redis type".split()),
    "presence_manager.redis": frozenset(
        (
            "address client_name cluster_address connect_timeout db force_resp2 io_timeout password "
            "prefix presence_hash_field_ttl presence_ttl presence_user_mapping replica_client "
            "sentinel_address sentinel_client_name sentinel_master_name sentinel_password sentinel_tls "
            "sentinel_user tls user"
        ).split()
    ),
    "prometheus": frozenset(
        (
            "enabled handler_prefix instrument_http_handlers native_histograms "
            "recovered_publications_histogram"
        ).split()
    ),
    "uni_http_stream": frozenset(
        "connect_code_to_http_response enabled handler_prefix max_request_body_size".split()
    ),
    "uni_sse": frozenset(
        "connect_code_to_http_response enabled handler_prefix max_request_body_size".split()
    ),
    "uni_websocket": frozenset(
        (
            "compression compression_level compression_min_size decompressed_message_size_limit "
            "disable_closing_handshake disable_disconnect_push enabled handler_prefix "
            "join_push_messages message_size_limit read_buffer_size use_write_buffer_pool "
            "write_buffer_size write_timeout"
        ).split()
    ),
    "websocket": frozenset(
        (
            "compression compression_level compression_min_size decompressed_message_size_limit "
            "disabled handler_prefix message_size_limit read_buffer_size use_write_buffer_pool "
            "write_buffer_size write_timeout"
        ).split()
    ),
}
