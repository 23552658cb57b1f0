"""The server HTTP API's request and result models (Pydantic: they make its OpenAPI document).

Requests ignore unknown fields and take ``null`` as absent, as Centrifugo's decoder does;
results describe the replies, which are written as Centrifugo writes them (zero values
left out except where noted).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Fields holding raw JSON, where ``null`` is a value; elsewhere ``null`` means "not set".
_RAW_FIELDS = frozenset({"data", "info", "params"})


# -- requests


class APIRequest(BaseModel):
    """Unknown fields are ignored and ``null`` is taken as absent, as Centrifugo's decoder does."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None or k in _RAW_FIELDS}
        return value


class Position(APIRequest):
    offset: int = Field(default=0, ge=0)
    epoch: str = ""


class PublishRequest(APIRequest):
    channel: str = ""
    data: Any = Field(default=None, description="JSON to publish (required unless b64data is set)")
    b64data: str = Field(default="", description="base64 of JSON to publish; wins over data")
    skip_history: bool = False
    tags: dict[str, str] = {}
    idempotency_key: str = Field(default="", description="a repeat within 5 minutes returns the first result")
    key: str = Field(
        default="", description="livehub's: what the publication is a value of (conflated channels)"
    )


class BroadcastRequest(APIRequest):
    channels: list[str] = []
    data: Any = None
    b64data: str = ""
    skip_history: bool = False
    tags: dict[str, str] = {}
    idempotency_key: str = ""
    key: str = ""


class BoolValue(APIRequest):
    value: bool = False


class SubscribeOverride(APIRequest):
    presence: BoolValue | None = Field(default=None, description="accepted, not applied")
    join_leave: BoolValue | None = Field(default=None, description="accepted, not applied")
    force_push_join_leave: BoolValue | None = None
    force_positioning: BoolValue | None = None
    force_recovery: BoolValue | None = None


class UserRequest(APIRequest):
    """Which connections: the user's ("" = anonymous ones), narrowed to one ``client``."""

    user: str = ""
    client: str = ""
    session: str = Field(default="", description="only unidirectional transports have one: matches nothing")
    all_users: bool = Field(default=False, description="with an empty user: every connection")


class SubscribeRequest(UserRequest):
    channel: str = ""
    info: Any = Field(default=None, description="channel info for presence and join/leave")
    b64info: str = ""
    data: Any = Field(default=None, description="sent to the client in the subscribe push")
    b64data: str = ""
    expire_at: int = Field(default=0, description="unix time the subscription expires at (0: never)")
    recover_since: Position | None = None
    override: SubscribeOverride | None = None


class UnsubscribeRequest(UserRequest):
    channel: str = Field(default="", description='"" leaves every channel')


class DisconnectCode(APIRequest):
    code: int = 0
    reason: str = ""


class DisconnectRequest(UserRequest):
    whitelist: list[str] = Field(default=[], description="client ids to keep")
    disconnect: DisconnectCode | None = Field(default=None, description='default: 3503 "force disconnect"')


class RefreshRequest(UserRequest):
    expired: bool = False
    expire_at: int = 0
    info: Any = None


class ChannelRequest(APIRequest):
    channel: str = ""


class HistoryRequest(APIRequest):
    channel: str = ""
    limit: int = Field(default=0, description="0: only the stream top; -1: everything")
    since: Position | None = None
    reverse: bool = False


class ChannelsRequest(APIRequest):
    pattern: str = Field(default="", description="glob: * ? [a-z] [!a] {a,b}")


class InfoRequest(APIRequest):
    pass


class RPCRequest(APIRequest):
    method: str = ""
    params: Any = None


class MapPublishRequest(APIRequest):
    channel: str = ""
    key: str = ""
    data: Any = Field(default=None, description="the key's new value, JSON (required unless b64data is set)")
    b64data: str = ""
    tags: dict[str, str] = {}
    key_mode: str = Field(default="", description='"" (always), "if_new" or "if_exists"')
    #: Centrifugo's options livehub does not serve (refused with 108 when set).
    idempotency_key: str = ""
    version: int = 0
    version_epoch: str = ""
    score: int = 0
    stream_data: Any = None
    b64stream_data: str = ""


class MapRemoveRequest(APIRequest):
    channel: str = ""
    key: str = ""
    idempotency_key: str = ""


class MapReadStateRequest(APIRequest):
    channel: str = ""
    cursor: str = ""
    limit: int = Field(default=0, description="entries per page; 0: all")
    key: str = Field(default="", description="only this key")
    asc: bool = False
    revision_offset: int = Field(default=0, ge=0)
    revision_epoch: str = ""


class MapReadStreamRequest(APIRequest):
    channel: str = ""
    since_offset: int = Field(default=0, ge=0)
    since_epoch: str = ""
    limit: int = Field(default=0, description="changes to read; 0: none (only the position), -1: all")
    reverse: bool = False


class BatchCommand(APIRequest):
    """One command of a batch: exactly one field set."""

    publish: PublishRequest | None = None
    broadcast: BroadcastRequest | None = None
    subscribe: SubscribeRequest | None = None
    unsubscribe: UnsubscribeRequest | None = None
    disconnect: DisconnectRequest | None = None
    history: HistoryRequest | None = None
    history_remove: ChannelRequest | None = None
    presence: ChannelRequest | None = None
    presence_stats: ChannelRequest | None = None
    info: InfoRequest | None = None
    rpc: RPCRequest | None = None
    refresh: RefreshRequest | None = None
    channels: ChannelsRequest | None = None
    map_publish: MapPublishRequest | None = None
    map_remove: MapRemoveRequest | None = None
    map_read_state: MapReadStateRequest | None = None
    map_read_stream: MapReadStreamRequest | None = None
    map_stats: ChannelRequest | None = None
    map_clear: ChannelRequest | None = None


class BatchRequest(APIRequest):
    commands: list[BatchCommand | None] = []
    parallel: bool = False


# -- results (for the OpenAPI document; replies are written as Centrifugo writes them:
# -- zero values left out except where noted)

T = TypeVar("T")


class APIError(BaseModel):
    code: int
    message: str


class Reply(BaseModel, Generic[T]):
    result: T | None = None
    error: APIError | None = None


class Empty(BaseModel):
    pass


class PublishResult(BaseModel):
    offset: int | None = Field(default=None, description="absent without history")
    epoch: str | None = None


class BroadcastResult(BaseModel):
    responses: list[Reply[PublishResult]]


class ClientInfoResult(BaseModel):
    user: str
    client: str
    conn_info: Any = None
    chan_info: Any = None


class PresenceResult(BaseModel):
    presence: dict[str, ClientInfoResult]


class PresenceStatsResult(BaseModel):
    num_clients: int
    num_users: int


class PublicationResult(BaseModel):
    data: Any
    info: ClientInfoResult | None = None
    offset: int | None = None
    tags: dict[str, str] | None = None


class HistoryResult(BaseModel):
    publications: list[PublicationResult]
    epoch: str
    offset: int


class ChannelInfo(BaseModel):
    num_clients: int


class ChannelsResult(BaseModel):
    channels: dict[str, ChannelInfo]


class NodeResult(BaseModel):
    uid: str
    name: str
    version: str
    num_clients: int
    num_users: int
    num_subs: int
    num_channels: int
    uptime: int | None = None


class InfoResult(BaseModel):
    nodes: list[NodeResult]


class RPCResult(BaseModel):
    data: Any = None


class BatchResponse(BaseModel):
    replies: list[dict[str, Any]] = Field(description='{"<method>": result} or {"error": ...}, in order')


class MapUpdateResult(BaseModel):
    offset: int = 0
    epoch: str = ""
    suppressed: bool = False
    suppress_reason: str = ""


class MapEntryResult(BaseModel):
    key: str
    data: Any = None
    tags: dict[str, str] = {}
    offset: int = 0
    removed: bool = False
    time: int = 0


class MapReadStateResult(BaseModel):
    entries: list[MapEntryResult] = []
    offset: int = 0
    epoch: str = ""
    cursor: str = ""


class MapReadStreamResult(BaseModel):
    entries: list[MapEntryResult] = []
    offset: int = 0
    epoch: str = ""


class MapStatsResult(BaseModel):
    num_keys: int = 0
