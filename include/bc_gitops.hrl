%% Records shared by bc_gitops and the runtimes that implement
%% the bc_gitops_runtime behaviour.
%%
%% The Rust NIF builds #source_spec{}, #health_spec{} and #app_spec{} and
%% reads #app_spec{} and #app_state{} with rustler's NifRecord derive, whose
%% struct fields follow the record's fields in order
%% (native/bc_gitops_nif/src/records.rs): change a field here and the struct
%% there together. test/bc_gitops_nif_tests.erl and bc_gitops_plan_tests.erl
%% check they agree.

-ifndef(BC_GITOPS_HRL).
-define(BC_GITOPS_HRL, true).

%% Where an application's code comes from.
-record(source_spec, {
    type :: hex | git | release,
    %% git: the repository; release: the tarball's http(s) URL.
    url :: binary() | undefined,
    %% git: a branch, a tag or a full commit SHA.
    ref :: binary() | undefined,
    %% release: the tarball's SHA-256, 64 lowercase hex digits.
    sha256 :: binary() | undefined,
    %% Build tool override; detected from the project when undefined.
    build :: rebar3 | mix | make | undefined
}).

%% How to tell whether a running application is healthy.
-record(health_spec, {
    type :: http | tcp | custom,
    port :: 1..65535 | undefined,
    path :: binary() | undefined,
    %% custom: Module:check(AppName) -> ok | {error, Reason}.
    module :: module() | undefined,
    %% Milliseconds.
    interval = 30000 :: pos_integer(),
    timeout = 5000 :: pos_integer()
}).

%% One application as the gitops repository describes it.
-record(app_spec, {
    name :: atom(),
    version :: binary(),
    description :: binary() | undefined,
    source :: #source_spec{},
    env = #{} :: #{atom() => term()},
    health :: #health_spec{} | undefined,
    depends_on = [] :: [atom()],
    %% Cluster mode: the members it runs on: all, or those whose node name
    %% matches one of the patterns (`*' matches any run of characters).
    placement = all :: all | [binary()],
    %% Cluster mode: batches of at most max_parallel members (the cluster's
    %% default), and a pause in ms after each batch (0).
    rollout :: #{max_parallel => pos_integer(), pause => non_neg_integer()} | undefined,
    %% embedded: in this node; vm: in a BEAM node of its own (a guest),
    %% started, watched and stopped by bc_gitops (bc_gitops_vm).
    isolation = embedded :: embedded | vm,
    %% isolation vm: the keys the spec gives (absent ones take defaults):
    %% memory_limit (MiB), scheduler_limit (+S), node_prefix, extra_args.
    vm_config :: #{memory_limit => pos_integer(), scheduler_limit => pos_integer(),
                   node_prefix => binary(), extra_args => [binary()]} | undefined
}).

%% One application as it is on this node.
-record(app_state, {
    name :: atom(),
    version :: binary(),
    status :: pending | running | stopped | failed | upgrading | removing,
    %% Where its build lives (the directory holding ebin/).
    path :: file:filename_all() | undefined,
    %% The application's top supervisor.
    pid :: pid() | undefined,
    %% erlang:system_time(millisecond) when it was (re)started.
    started_at :: integer() | undefined,
    health = unknown :: healthy | unhealthy | unknown,
    env = #{} :: #{atom() => term()},
    depends_on = [] :: [atom()],
    %% Where it runs, as the spec said when it was started (isolation and
    %% vm_config of #app_spec{}). `undefined': the runtime does not say, and
    %% the plan never moves the app.
    isolation :: embedded | vm | undefined,
    vm_config :: map() | undefined,
    %% isolation vm: the guest node it runs in; undefined in this node.
    node :: node() | undefined
}).

-endif.
