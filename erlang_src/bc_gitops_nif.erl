%%% @doc The Rust NIF: spec parsing, validation and planning, git (and
%%% commit signatures), encrypted env values, and tar archives.
%%%
%%% This module only loads `priv/bc_gitops_nif.so' and declares the NIF
%%% functions; callers use {@link bc_gitops_specs} and {@link bc_gitops_plan},
%%% which give the results their documented shapes.
%%%
%%% When the library cannot be loaded the module still loads, so that the
%%% reason can be read with {@link load_error/0}; every NIF function then
%%% raises an error that names the missing file. The NIF module itself is
%%% never hot-reloaded: rustler registers no upgrade callback.
-module(bc_gitops_nif).

-export([load_error/0, library_path/0]).
-export([parse_dir/2, plan/4, git_sync_start/2, redact_url/1, consult/1, json_decode/1]).
-export([age_check/1, env_reveal/2]).
-export([tar_list/2, tar_unpack/3, gunzip/2]).

-on_load(init/0).

-define(LOAD_ERROR_KEY, {?MODULE, load_error}).

%% A missing library still lets the module load, so that load_error/0 can
%% say which file is missing. Any other failure fails the load: above all
%% a reload of this module (rustler registers no upgrade callback), which
%% must keep the old, working code instead of replacing it with stubs.
-spec init() -> ok | {error, term()}.
init() ->
    Path = library_path(),
    case filelib:is_regular(Path ++ ".so") of
        false ->
            Reason = {library_missing, Path ++ ".so"},
            persistent_term:put(?LOAD_ERROR_KEY, Reason),
            logger:error("bc_gitops: the NIF library ~ts is missing. "
                         "Build it with `rebar3 compile` (needs cargo).", [Path ++ ".so"]),
            ok;
        true ->
            case erlang:load_nif(Path, 0) of
                ok ->
                    persistent_term:erase(?LOAD_ERROR_KEY),
                    ok;
                {error, Reason} = Error ->
                    logger:error("bc_gitops: cannot load the NIF library ~ts: ~p",
                                 [Path ++ ".so", Reason]),
                    Error
            end
    end.

%% @doc `ok' when the NIF library is loaded, else why it is not.
-spec load_error() -> ok | {error, term()}.
load_error() ->
    case persistent_term:get(?LOAD_ERROR_KEY, undefined) of
        undefined -> ok;
        Reason -> {error, Reason}
    end.

%% @doc The library's path without its `.so' extension, as
%% `erlang:load_nif/2' takes it.
-spec library_path() -> file:filename().
library_path() ->
    Priv =
        case code:priv_dir(bc_gitops) of
            {error, bad_name} ->
                %% Not on the code path as an application (a bare ebin dir):
                %% priv/ sits beside the ebin/ this module came from.
                filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
            Dir ->
                Dir
        end,
    filename:join(Priv, "bc_gitops_nif").

%% @doc Reads and validates every spec under `Root/AppsDir'. Runs on a dirty
%% IO scheduler. See {@link bc_gitops_specs:parse_dir/2}.
-spec parse_dir(binary(), binary()) ->
    {ok, list(), [map()], [map()]} | {error, {atom(), binary()}}.
parse_dir(_Root, _AppsDir) ->
    erlang:nif_error(not_loaded()).

%% @doc Plans the actions that take Current to Desired; with an age
%% identity file, encrypted env values that decrypt to the same plaintext
%% are equal. Runs on a dirty CPU scheduler. See {@link bc_gitops_plan:plan/4}.
-spec plan(list(), list(), [binary()], binary() | undefined) -> {ok, list(), list()}.
plan(_Desired, _Current, _Invalid, _Identity) ->
    erlang:nif_error(not_loaded()).

%% @doc Whether a value is a well-formed ASCII-armored age file encrypted
%% to recipients; decrypts nothing. See {@link bc_gitops_secrets:check/1}.
-spec age_check(binary()) -> ok | {error, binary()}.
age_check(_Armored) ->
    erlang:nif_error(not_loaded()).

%% @doc `Env' with each `{age, Armored}' value decrypted with the identities
%% of the file `Identity'. Runs on a dirty CPU scheduler. See
%% {@link bc_gitops_secrets:reveal/2}.
-spec env_reveal(map(), binary()) -> {ok, map()} | {error, {term(), atom(), binary()}}.
env_reveal(_Env, _Identity) ->
    erlang:nif_error(not_loaded()).

%% @doc What `file:consult/1' gives for `Text', but making no atom: an
%% atom the VM does not know yet is `{error, {Line, {unknown_atom, Name}}}'.
%% For terms that come from outside (a package's metadata). Runs on a dirty
%% CPU scheduler.
-spec consult(binary()) -> {ok, [term()]} | {error, {pos_integer(), binary() | {unknown_atom, binary()}}}.
consult(_Text) ->
    erlang:nif_error(not_loaded()).

%% @doc One JSON document from outside as a term: objects are maps with
%% binary keys, strings binaries, `true', `false' and `null' atoms; no other
%% atom is made; nesting is bounded as for spec files. An error gives the
%% line (0 when unknown) and serde_json's message. Runs on a dirty CPU
%% scheduler. See {@link bc_gitops_json:decode/1}.
-spec json_decode(binary()) -> {ok, term()} | {error, {non_neg_integer(), binary()}}.
json_decode(_Bytes) ->
    erlang:nif_error(not_loaded()).

%% @doc Every entry of the tar archive `Path' (plain or gzip-compressed):
%% its name as stored, its type and, for links, the target as stored. The
%% entries' data may hold at most `MaxData' bytes, the headers of one entry
%% at most 1 MiB. Runs on a dirty IO scheduler. For {@link bc_gitops_tar},
%% which checks the listing before it calls {@link tar_unpack/3}.
-spec tar_list(binary(), pos_integer()) ->
          {ok, [{binary(), regular | directory | symlink | link | char | block | fifo
                           | {unsupported, byte()}, binary() | undefined}]}
          | {error, {too_large_unpacked, pos_integer()} | {bad_archive, binary()}
                    | {file_error, open, binary(), binary()}}.
tar_list(_Path, _MaxData) ->
    erlang:nif_error(not_loaded()).

%% @doc Unpacks the tar archive `Path' into the existing directory `Dest',
%% with the bounds of {@link tar_list/2}. Runs on a dirty IO scheduler.
-spec tar_unpack(binary(), binary(), pos_integer()) ->
          ok | {error, {too_large_unpacked, pos_integer()} | {bad_archive, binary()}
                       | {file_error, open, binary(), binary()}}.
tar_unpack(_Path, _Dest, _MaxData) ->
    erlang:nif_error(not_loaded()).

%% @doc `Data' (gzip) inflated, at most `Max' bytes of it: more is
%% `{error, {too_large_unpacked, Max}}', what is not gzip `{error,
%% {bad_archive, Message}}'. Runs on a dirty CPU scheduler.
-spec gunzip(binary(), pos_integer()) ->
          {ok, binary()} | {error, {too_large_unpacked, pos_integer()} | {bad_archive, binary()}}.
gunzip(_Data, _Max) ->
    erlang:nif_error(not_loaded()).

%% The reason a stub raises: dialyzer knows erlang:nif_error/1 marks a
%% NIF stub, so it must be called directly in each stub.
-spec not_loaded() -> {bc_gitops_nif_not_loaded, file:filename(), ok | {error, term()}}.
not_loaded() ->
    {bc_gitops_nif_not_loaded, library_path() ++ ".so", load_error()}.

%% @doc Starts a clone or fetch on a thread of its own; the caller gets
%% `{bc_gitops_git, Ref, Result}' when it ends. See
%% {@link bc_gitops_git:sync/1}.
-spec git_sync_start(map(), reference()) -> ok | {error, {invalid_input, binary()}}.
git_sync_start(_Opts, _Ref) ->
    erlang:nif_error(not_loaded()).

%% @doc The URL with any credentials in it masked, for logs and status.
-spec redact_url(binary()) -> binary().
redact_url(_Url) ->
    erlang:nif_error(not_loaded()).
