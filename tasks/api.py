"""REST views for the algorithm catalogue, tasks and runs.

Authorised twice: HasRule refuses a user whose roles lack the action at any scope (403),
and each queryset comes from a selector scoped to the caller, so an object outside their
scope is absent (404). Whether the caller's scope covers a write on a visible object is
the service's decision (403).

Runs are shared by users and nodes. A node sees the runs addressed to its organisation in
its collaboration, and only a node may claim, start, log and finish them. Result
downloads are open to users allowed to see the run and to the nodes that see it (the
node serving that organisation, e.g. to check what it uploaded); a node cannot fetch
other organisations' results here.

An algorithm container (tasks.container_tokens) reaches only the actions its view lists
in `container_actions`, on querysets limited to its own job: it creates subtasks, reads
its job's tasks, runs and results. Anything outside its job is absent (404).
"""

from asgiref.sync import sync_to_async
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from accounts.models import Action, Resource
from accounts.permissions import HasRule, IsContainer, IsNode, is_container, is_node
from core.errors import Conflict
from core.parsers import JSONParser
from core.shapes import any_of
from core.views import GuardedViewSet, ScopedViewSet, rules_for
from tasks import container_tokens, selectors, services
from tasks.filters import AlgorithmFilter, RunFilter, TaskFilter
from tasks.serializers import (
    NODE_RUN,
    RUN,
    RUN_DETAIL,
    RUN_WITH_RESULT,
    TASK,
    AlgorithmReviewSerializer,
    AlgorithmSerializer,
    AlgorithmSubmitSerializer,
    CatalogueStatusSerializer,
    ContainerTokenSerializer,
    RunFinishInlineSerializer,
    RunFinishSerializer,
    RunHoldSerializer,
    RunListQuerySerializer,
    RunLogSerializer,
    RunStartSerializer,
    SubtaskCreateSerializer,
    TaskCreateSerializer,
)
from tasks.uploads import ResultUploadHandler


class ChunkedFileResponse(FileResponse):
    """A FileResponse streamed one block at a time under either Django handler.

    Behind the WSGI bridge (vantage.wsgi_bridge) the handler gives `file_to_stream` to
    the bridge's file wrapper. Under Django's own ASGI handler, a synchronous streaming
    iterator is turned into a list before sending, i.e. the whole file read into memory
    (measured: +1 GiB RSS for a 1 GiB result); reading each block in a worker thread
    through an asynchronous iterator keeps one block in memory at a time.
    """

    block_size = 1024 * 1024

    def _set_streaming_content(self, value):
        super()._set_streaming_content(value)  # headers from the file, and its closer
        if self.file_to_stream is not None:
            super(FileResponse, self)._set_streaming_content(self._blocks(self.file_to_stream))

    async def _blocks(self, filelike):
        read = sync_to_async(filelike.read, thread_sensitive=False)
        while block := await read(self.block_size):
            yield block


class AlgorithmViewSet(ScopedViewSet):
    serializer_class = AlgorithmSerializer
    filterset_class = AlgorithmFilter
    rules = rules_for(Resource.ALGORITHM, list=Action.VIEW, retrieve=Action.VIEW, create=Action.CREATE,
                      review=Action.EDIT)

    def get_queryset(self):
        return selectors.algorithm_list(user=self.request.user)

    @extend_schema(request=AlgorithmSubmitSerializer, responses={201: AlgorithmSerializer})
    def create(self, request):
        """Submit an algorithm to the catalogue; it awaits review before tasks may use it."""
        algorithm = services.algorithm_submit(actor=request.user, **self._input(AlgorithmSubmitSerializer))
        return Response(AlgorithmSerializer(algorithm).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=AlgorithmReviewSerializer, responses=AlgorithmSerializer)
    @action(detail=True, methods=["post"])
    def review(self, request, pk=None):
        """Approve, reject or retire an algorithm (reviewers with global algorithm rights)."""
        algorithm = services.algorithm_review(
            actor=request.user, algorithm=self.get_object(), **self._input(AlgorithmReviewSerializer)
        )
        return Response(AlgorithmSerializer(algorithm).data)

    @extend_schema(parameters=[CatalogueStatusSerializer], responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["get"], permission_classes=[IsNode], url_path="catalogue-status")
    def catalogue_status(self, request):
        """For nodes with require_catalogue: the catalogue's status for an image digest
        ("approved", "retired", "rejected", "submitted" or "unknown")."""
        serializer = CatalogueStatusSerializer(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        found = selectors.catalogue_status(**serializer.validated_data)
        return Response({**serializer.validated_data, "status": found})


class TaskViewSet(ScopedViewSet):
    serializer_class = TaskCreateSerializer  # the browsable API's form (DEBUG); answers are TASK
    filterset_class = TaskFilter
    permission_classes = [HasRule | IsContainer]
    rules = rules_for(Resource.TASK, list=Action.VIEW, retrieve=Action.VIEW, create=Action.CREATE,
                      kill=Action.EDIT, destroy=Action.DELETE)
    container_actions = {"create", "retrieve"}

    def get_queryset(self):
        if is_container(self.request.user):
            return selectors.container_task_list(container=self.request.user)
        return selectors.task_list(user=self.request.user)

    @extend_schema(responses=TASK.schema(many=True))
    def list(self, request):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response([TASK.of(task) for task in page])

    @extend_schema(responses=TASK.schema())
    def retrieve(self, request, pk=None):
        return Response(TASK.of(self.get_object()))

    @extend_schema(
        request=TaskCreateSerializer,
        responses={201: TASK.schema(), 413: OpenApiResponse(description="An input exceeds VANTAGE_MAX_INPUT_BYTES.")},
    )
    def create(self, request):
        """Create a task: one pending run per named organisation, each with its own input.

        Called with a container token, this creates a subtask of the container's task
        (see docs/node.md, "Container tokens (server side)").
        """
        if is_container(request.user):
            serializer = SubtaskCreateSerializer(data=request.data, context=self.get_serializer_context())
            serializer.is_valid(raise_exception=True)
            task = services.subtask_create(container=request.user, **serializer.to_service_kwargs())
        else:
            serializer = TaskCreateSerializer(data=request.data, context=self.get_serializer_context())
            serializer.is_valid(raise_exception=True)
            task = services.task_create(actor=request.user, **serializer.to_service_kwargs())
        return Response(TASK.of(task), status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=TASK.schema())
    @action(detail=True, methods=["post"])
    def kill(self, request, pk=None):
        """Kill the task's job: pending runs end now, claimed and running ones are asked to stop."""
        task = self.get_object()
        services.task_kill(actor=request.user, task=task)
        return Response(TASK.of(selectors.task_detail(task_id=task.pk)))

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="The job still has open runs.")})
    def destroy(self, request, pk=None):
        """Delete a finished job with its runs and result files."""
        services.task_delete(actor=request.user, task=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GuardedViewSet):
    permission_classes = [IsNode | HasRule | IsContainer]
    filterset_class = RunFilter
    rules = rules_for(Resource.RUN, list=Action.VIEW, retrieve=Action.VIEW, result=Action.VIEW)
    container_actions = {"list", "retrieve", "result"}

    # Actions that answer from their service: looking the run up only decides 404.
    LOOKUP_ONLY_ACTIONS = {"claim", "start", "log", "finish", "hold"}

    def get_queryset(self):
        if is_container(self.request.user):
            return selectors.container_run_list(container=self.request.user)
        # Only a run's detail shows its input or log; the other actions answer from the service.
        runs = selectors.run_list(principal=self.request.user, defer_payload=self.action != "retrieve")
        if self.action in self.LOOKUP_ONLY_ACTIONS:
            return runs.select_related(None).only("pk")
        if self.action == "result":
            return runs.defer(None).defer("input", "log")  # a small result is in the row
        return runs

    @extend_schema(parameters=[RunListQuerySerializer],
                   responses=any_of("RunInList", RUN_WITH_RESULT, RUN, many=True))
    def list(self, request):
        options = RunListQuerySerializer(data=request.query_params)
        options.is_valid(raise_exception=True)
        # With results: a central method's subtask answers in one request, not one per site.
        shape = RUN_WITH_RESULT if options.validated_data["with_result"] else RUN
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()).values(*shape.columns))
        return self.get_paginated_response([shape.row(row) for row in page])

    # One run answers in the caller's shape: a user reads its log, the node that runs it reads
    # what it needs to run it (input, image, method); a container gets the list shape.
    @extend_schema(responses=any_of("RunForCaller", RUN_DETAIL, NODE_RUN, RUN))
    def retrieve(self, request, pk=None):
        run = self.get_object()
        if is_container(request.user):
            return Response(RUN.of(run))
        if is_node(request.user):
            return Response(NODE_RUN.of(run))
        return Response(RUN_DETAIL.of(run))

    def initialize_request(self, request, *args, **kwargs):
        if self.action_map.get(request.method.lower()) == "finish":
            # Before anything (even a CSRF check) parses the body: the result goes to a
            # temporary file, counted against the limit, never into memory.
            request.upload_handlers = [ResultUploadHandler(request)]
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(request=None, responses={200: NODE_RUN.schema(),
                                            409: OpenApiResponse(description="Another node claimed it first.")})
    @action(detail=True, methods=["post"], permission_classes=[IsNode])
    def claim(self, request, pk=None):
        """Claim a pending run for this node; of nodes claiming at once, exactly one wins."""
        # The claim itself is scoped to the node, so the object is looked up only when it fails.
        run = services.run_claim(run_id=pk, node=request.user)  # pk: an int (core.routers)
        if run is None:
            self.get_object()  # 404 when the run is not this node's to see
            raise Conflict("The run is no longer pending: another node claimed it, or it was killed.")
        return Response(NODE_RUN.of(run))

    @extend_schema(request=None, responses={200: ContainerTokenSerializer, 409: OpenApiResponse(
        description="This node does not hold the run (not claimed by it, or final), or its deadline passed.")})
    @action(detail=True, methods=["post"], permission_classes=[IsNode], url_path="container-token")
    def container_token(self, request, pk=None):
        """A token for the run's algorithm container, valid until the run ends or its deadline."""
        token, expires_in = container_tokens.container_token_issue(run=self.get_object(), node=request.user)
        return Response(ContainerTokenSerializer({"token": token, "expires_in": expires_in}).data)

    @extend_schema(request=RunStartSerializer, responses=RUN.schema())
    @action(detail=True, methods=["post"], permission_classes=[IsNode])
    def start(self, request, pk=None):
        """Mark a run this node claimed as running: its container has started."""
        # As for a claim: the start is scoped to the node that claimed the run, so the run is
        # looked up only when it fails, to answer 404 rather than 409 for a run it cannot see.
        try:
            run = services.run_start(run_id=pk, node=request.user, **self._input(RunStartSerializer))
        except Conflict:
            self.get_object()  # 404 when the run is not this node's to see
            raise
        return Response(RUN.of(run))

    @extend_schema(request=RunLogSerializer, responses=RUN.schema())
    @action(detail=True, methods=["post"], permission_classes=[IsNode])
    def log(self, request, pk=None):
        """Append to the run's log. The answer tells the node whether a kill was requested."""
        run = self.get_object()
        run = services.run_append_log(run_id=run.pk, node=request.user, **self._input(RunLogSerializer))
        return Response(RUN.of(run))

    @extend_schema(request=RunHoldSerializer, responses=RUN.schema())
    @action(detail=True, methods=["post"], permission_classes=[IsNode])
    def hold(self, request, pk=None):
        """The node's output gate holds the result for its steward: the run awaits release."""
        run = self.get_object()
        run = services.run_hold(run_id=run.pk, node=request.user, **self._input(RunHoldSerializer))
        return Response(RUN.of(run))

    @extend_schema(
        request={"multipart/form-data": RunFinishSerializer, "application/json": RunFinishInlineSerializer},
        responses={200: RUN.schema(), 413: OpenApiResponse(description="The result exceeds VANTAGE_MAX_RESULT_BYTES.")},
    )
    @action(detail=True, methods=["post"], permission_classes=[IsNode],
            parser_classes=[MultiPartParser, JSONParser, FormParser])
    def finish(self, request, pk=None):
        """Report the run's final state with its output: streamed as the multipart file part
        `result`, or, when small, inline as base64 in a JSON body (one parse, no file part)."""
        # The service finds the run among this node's own (404 otherwise), as get_object would.
        inline = request.content_type.startswith("application/json")
        fields = self._input(RunFinishInlineSerializer if inline else RunFinishSerializer)
        run = services.run_finish(run_id=pk, node=request.user, **fields)
        return Response(RUN.of(run))

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY,
                              404: OpenApiResponse(description="No such run, or it has no result.")})
    @action(detail=True, methods=["get"])
    def result(self, request, pk=None):
        """Download the run's result file; its SHA-256 is in the X-Content-SHA256 header."""
        run = self.get_object()
        response = ChunkedFileResponse(
            selectors.run_result_file(run=run), as_attachment=True, filename=f"run-{run.pk}-result.json",
        )
        response["X-Content-SHA256"] = run.result_sha256
        return response
