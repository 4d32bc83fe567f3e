"""gRPC servicers of the configuration model: each RPC is one generic operation on a catalog resource.

Who may call which is control/permissions.py's table, checked before these run. Each runs in one transaction;
projection families are marked dirty and the audit event written inside it, so Redis follows as soon as it
commits.
"""

from __future__ import annotations

from collections.abc import Callable

from control import calls, catalog, decks, resources
from control.db import Database
from control.errors import invalid
from control.resources import Resource
from tollgate.v1 import (
    common_pb2,
    directory_pb2,
    directory_pb2_grpc,
    rating_pb2,
    rating_pb2_grpc,
    trunks_pb2,
    trunks_pb2_grpc,
)


def _create(resource: Resource, message_field: str, id_field: str | None = None) -> Callable:
    def rpc(self, request, context):
        if not request.HasField(message_field):
            raise invalid(message_field, "is required")
        ident = getattr(request, id_field) if id_field else ""
        parent = getattr(request, "parent", "")
        with self._db.transaction() as conn:
            return resources.create(conn, resource, getattr(request, message_field), ident, parent,
                                    id_field=id_field or "")

    return rpc


def _get(resource: Resource) -> Callable:
    def rpc(self, request, context):
        with self._db.transaction() as conn:
            return resource.to_message(resources.get(conn, resource, request.name))

    return rpc


def _update(resource: Resource, message_field: str) -> Callable:
    def rpc(self, request, context):
        if not request.HasField(message_field):
            raise invalid(message_field, "is required")
        with self._db.transaction() as conn:
            return resources.update(conn, resource, getattr(request, message_field), list(request.update_mask.paths))

    return rpc


def _list(resource: Resource, response_type, items_field: str) -> Callable:
    def rpc(self, request, context):
        filters = {f: getattr(request, f) for f in resource.list_filters}
        with self._db.transaction() as conn:
            items, token = resources.list_page(conn, resource, parent=getattr(request, "parent", ""),
                                               page_size=request.page_size, page_token=request.page_token,
                                               filters=filters)
        return response_type(**{items_field: items, "next_page_token": token})

    return rpc


def _delete(resource: Resource, response_type) -> Callable:
    def rpc(self, request, context):
        with self._db.transaction() as conn:
            resources.delete(conn, resource, request.name)
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
    CreateRateGroup = _create(catalog.RATE_GROUP, "rate_group", "rate_group_id")
    GetRateGroup = _get(catalog.RATE_GROUP)
    UpdateRateGroup = _update(catalog.RATE_GROUP, "rate_group")
    ListRateGroups = _list(catalog.RATE_GROUP, rating_pb2.ListRateGroupsResponse, "rate_groups")
    DeleteRateGroup = _delete(catalog.RATE_GROUP, rating_pb2.DeleteRateGroupResponse)
    CreateOriginationRate = _create(catalog.ORIGINATION_RATE, "origination_rate")
    GetOriginationRate = _get(catalog.ORIGINATION_RATE)
    UpdateOriginationRate = _update(catalog.ORIGINATION_RATE, "origination_rate")
    ListOriginationRates = _list(catalog.ORIGINATION_RATE, rating_pb2.ListOriginationRatesResponse,
                                 "origination_rates")
    DeleteOriginationRate = _delete(catalog.ORIGINATION_RATE, rating_pb2.DeleteOriginationRateResponse)
    ImportOriginationRates = _import(decks.ORIGINATION)


class TrunkService(_Pooled, trunks_pb2_grpc.TrunkServiceServicer):
    CreateTrunk = _create(catalog.TRUNK, "trunk", "trunk_id")
    GetTrunk = _get(catalog.TRUNK)
    UpdateTrunk = _update(catalog.TRUNK, "trunk")
    ListTrunks = _list(catalog.TRUNK, trunks_pb2.ListTrunksResponse, "trunks")
    DeleteTrunk = _delete(catalog.TRUNK, trunks_pb2.DeleteTrunkResponse)
    CreateTerminationRate = _create(catalog.TERMINATION_RATE, "termination_rate")
    GetTerminationRate = _get(catalog.TERMINATION_RATE)
    UpdateTerminationRate = _update(catalog.TERMINATION_RATE, "termination_rate")
    ListTerminationRates = _list(catalog.TERMINATION_RATE, trunks_pb2.ListTerminationRatesResponse,
                                 "termination_rates")
    DeleteTerminationRate = _delete(catalog.TERMINATION_RATE, trunks_pb2.DeleteTerminationRateResponse)
    ImportTerminationRates = _import(decks.TERMINATION)


class DirectoryService(_Pooled, directory_pb2_grpc.DirectoryServiceServicer):
    CreateDid = _create(catalog.DID, "did", "did_id")
    GetDid = _get(catalog.DID)
    UpdateDid = _update(catalog.DID, "did")
    ListDids = _list(catalog.DID, directory_pb2.ListDidsResponse, "dids")
    DeleteDid = _delete(catalog.DID, directory_pb2.DeleteDidResponse)
    CreateCallerId = _create(catalog.CALLER_ID, "caller_id")
    GetCallerId = _get(catalog.CALLER_ID)
    ListCallerIds = _list(catalog.CALLER_ID, directory_pb2.ListCallerIdsResponse, "caller_ids")
    DeleteCallerId = _delete(catalog.CALLER_ID, directory_pb2.DeleteCallerIdResponse)
    CreateSipDevice = _create(catalog.SIP_DEVICE, "sip_device", "sip_device_id")
    GetSipDevice = _get(catalog.SIP_DEVICE)
    UpdateSipDevice = _update(catalog.SIP_DEVICE, "sip_device")
    ListSipDevices = _list(catalog.SIP_DEVICE, directory_pb2.ListSipDevicesResponse, "sip_devices")
    DeleteSipDevice = _delete(catalog.SIP_DEVICE, directory_pb2.DeleteSipDeviceResponse)
    CreateIpMap = _create(catalog.IP_MAP, "ip_map", "ip_map_id")
    GetIpMap = _get(catalog.IP_MAP)
    UpdateIpMap = _update(catalog.IP_MAP, "ip_map")
    ListIpMaps = _list(catalog.IP_MAP, directory_pb2.ListIpMapsResponse, "ip_maps")
    DeleteIpMap = _delete(catalog.IP_MAP, directory_pb2.DeleteIpMapResponse)
    CreateLocalization = _create(catalog.LOCALIZATION, "localization", "localization_id")
    GetLocalization = _get(catalog.LOCALIZATION)
    UpdateLocalization = _update(catalog.LOCALIZATION, "localization")
    ListLocalizations = _list(catalog.LOCALIZATION, directory_pb2.ListLocalizationsResponse, "localizations")
    DeleteLocalization = _delete(catalog.LOCALIZATION, directory_pb2.DeleteLocalizationResponse)
