"""gRPC servicers of the configuration model: each RPC is one generic operation on a catalog resource.

Who may call which is control/api/permissions.py's table, checked before these run. Each runs in one transaction;
projection families are marked dirty and the audit event written inside it, so Redis follows as soon as it
commits.
"""

from __future__ import annotations

from collections.abc import Callable

from control.api import calls
from control.api.errors import invalid
from control.catalog import decks, engine, resources
from control.db import Database
from tollgate.v1 import (
    common_pb2,
    directory_pb2,
    directory_pb2_grpc,
    rating_pb2,
    rating_pb2_grpc,
    trunks_pb2,
    trunks_pb2_grpc,
)


def _create(resource: engine.Resource, message_field: str, id_field: str | None = None) -> Callable:
    def rpc(self, request, context):
        if not request.HasField(message_field):
            raise invalid(message_field, "is required")
        ident = getattr(request, id_field) if id_field else ""
        parent = getattr(request, "parent", "")
        with self._db.transaction() as conn:
            return engine.create(conn, resource, getattr(request, message_field), ident, parent,
                                    id_field=id_field or "")

    return rpc


def _get(resource: engine.Resource) -> Callable:
    def rpc(self, request, context):
        with self._db.transaction() as conn:
            return resource.to_message(engine.get(conn, resource, request.name))

    return rpc


def _update(resource: engine.Resource, message_field: str) -> Callable:
    def rpc(self, request, context):
        if not request.HasField(message_field):
            raise invalid(message_field, "is required")
        with self._db.transaction() as conn:
            return engine.update(conn, resource, getattr(request, message_field), list(request.update_mask.paths))

    return rpc


def _list(resource: engine.Resource, response_type, items_field: str) -> Callable:
    def rpc(self, request, context):
        filters = {f: getattr(request, f) for f in resource.list_filters}
        with self._db.transaction() as conn:
            items, token = engine.list_page(conn, resource, parent=getattr(request, "parent", ""),
                                               page_size=request.page_size, page_token=request.page_token,
                                               filters=filters)
        return response_type(**{items_field: items, "next_page_token": token})

    return rpc


def _delete(resource: engine.Resource, response_type) -> Callable:
    def rpc(self, request, context):
        with self._db.transaction() as conn:
            engine.delete(conn, resource, request.name)
        return response_type()

    return rpc


def _import(kind: decks.DeckKind) -> Callable:
    def rpc(self, request_iterator, context):
        parent, mode, data = decks.collect_upload(request_iterator, calls.current().server.config.max_upload_bytes)
        with self._db.transaction(long=True) as conn:
            result = decks.import_deck(conn, kind, parent, mode, data)
        return common_pb2.ImportRatesResponse(rows_imported=result.rows_imported, rows_in_deck=result.rows_in_deck,
                                              deck_sha256=result.deck_sha256)

    return rpc


class _Pooled:
    def __init__(self, db: Database):
        self._db = db


class RateGroupService(_Pooled, rating_pb2_grpc.RateGroupServiceServicer):
    CreateRateGroup = _create(resources.RATE_GROUP, "rate_group", "rate_group_id")
    GetRateGroup = _get(resources.RATE_GROUP)
    UpdateRateGroup = _update(resources.RATE_GROUP, "rate_group")
    ListRateGroups = _list(resources.RATE_GROUP, rating_pb2.ListRateGroupsResponse, "rate_groups")
    DeleteRateGroup = _delete(resources.RATE_GROUP, rating_pb2.DeleteRateGroupResponse)
    CreateOriginationRate = _create(resources.ORIGINATION_RATE, "origination_rate")
    GetOriginationRate = _get(resources.ORIGINATION_RATE)
    UpdateOriginationRate = _update(resources.ORIGINATION_RATE, "origination_rate")
    ListOriginationRates = _list(resources.ORIGINATION_RATE, rating_pb2.ListOriginationRatesResponse,
                                 "origination_rates")
    DeleteOriginationRate = _delete(resources.ORIGINATION_RATE, rating_pb2.DeleteOriginationRateResponse)
    ImportOriginationRates = _import(decks.ORIGINATION)


class TrunkService(_Pooled, trunks_pb2_grpc.TrunkServiceServicer):
    CreateTrunk = _create(resources.TRUNK, "trunk", "trunk_id")
    GetTrunk = _get(resources.TRUNK)
    UpdateTrunk = _update(resources.TRUNK, "trunk")
    ListTrunks = _list(resources.TRUNK, trunks_pb2.ListTrunksResponse, "trunks")
    DeleteTrunk = _delete(resources.TRUNK, trunks_pb2.DeleteTrunkResponse)
    CreateTerminationRate = _create(resources.TERMINATION_RATE, "termination_rate")
    GetTerminationRate = _get(resources.TERMINATION_RATE)
    UpdateTerminationRate = _update(resources.TERMINATION_RATE, "termination_rate")
    ListTerminationRates = _list(resources.TERMINATION_RATE, trunks_pb2.ListTerminationRatesResponse,
                                 "termination_rates")
    DeleteTerminationRate = _delete(resources.TERMINATION_RATE, trunks_pb2.DeleteTerminationRateResponse)
    ImportTerminationRates = _import(decks.TERMINATION)


class DirectoryService(_Pooled, directory_pb2_grpc.DirectoryServiceServicer):
    CreateDid = _create(resources.DID, "did", "did_id")
    GetDid = _get(resources.DID)
    UpdateDid = _update(resources.DID, "did")
    ListDids = _list(resources.DID, directory_pb2.ListDidsResponse, "dids")
    DeleteDid = _delete(resources.DID, directory_pb2.DeleteDidResponse)
    CreateCallerId = _create(resources.CALLER_ID, "caller_id")
    GetCallerId = _get(resources.CALLER_ID)
    ListCallerIds = _list(resources.CALLER_ID, directory_pb2.ListCallerIdsResponse, "caller_ids")
    DeleteCallerId = _delete(resources.CALLER_ID, directory_pb2.DeleteCallerIdResponse)
    CreateSipDevice = _create(resources.SIP_DEVICE, "sip_device", "sip_device_id")
    GetSipDevice = _get(resources.SIP_DEVICE)
    UpdateSipDevice = _update(resources.SIP_DEVICE, "sip_device")
    ListSipDevices = _list(resources.SIP_DEVICE, directory_pb2.ListSipDevicesResponse, "sip_devices")
    DeleteSipDevice = _delete(resources.SIP_DEVICE, directory_pb2.DeleteSipDeviceResponse)
    CreateIpMap = _create(resources.IP_MAP, "ip_map", "ip_map_id")
    GetIpMap = _get(resources.IP_MAP)
    UpdateIpMap = _update(resources.IP_MAP, "ip_map")
    ListIpMaps = _list(resources.IP_MAP, directory_pb2.ListIpMapsResponse, "ip_maps")
    DeleteIpMap = _delete(resources.IP_MAP, directory_pb2.DeleteIpMapResponse)
    CreateLocalization = _create(resources.LOCALIZATION, "localization", "localization_id")
    GetLocalization = _get(resources.LOCALIZATION)
    UpdateLocalization = _update(resources.LOCALIZATION, "localization")
    ListLocalizations = _list(resources.LOCALIZATION, directory_pb2.ListLocalizationsResponse, "localizations")
    DeleteLocalization = _delete(resources.LOCALIZATION, directory_pb2.DeleteLocalizationResponse)
