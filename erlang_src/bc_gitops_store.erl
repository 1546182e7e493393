%%% @doc Persists the last applied state under `local_path', so that it
%%% survives a node restart: the last applied commit and, for each app, the
%%% version, env and build location it was deployed with.
%%%
%%% In cluster mode it also keeps what the coordinator assigned to this
%%% member and what of it settled.
%%%
%%% Writes are atomic (a temporary file, fsync, then rename), and the file
%%% carries its length and a CRC-32 of its contents: a torn or corrupt file is detected,
%%% logged as a warning and ignored. It never stops the application from
%%% starting.
-module(bc_gitops_store).

-include_lib("kernel/include/logger.hrl").

-export([load/1, save/2]).

-export_type([stored/0]).

-type stored() :: #{
    last_commit := binary() | undefined,
    apps := #{atom() => #{version := binary(), env := map(), path := term(),
                          depends_on := [atom()]}},
    %% Cluster mode: the member's assignment and what of it settled.
    cluster => #{assignment := bc_gitops_member:assignment(),
                 settled := bc_gitops_member:settled()}
}.

-define(MAGIC, "BCGITOPS").
-define(FORMAT, 1).

%% @doc The stored state, or an empty one when there is none or it cannot
%% be trusted (then with a warning).
-spec load(file:filename()) -> stored().
load(File) ->
    case file:read_file(File) of
        {ok, Bin} ->
            case decode(Bin) of
                {ok, Stored} ->
                    Stored;
                {error, Why} ->
                    ?LOG_WARNING("bc_gitops: ignoring state file ~ts: ~p", [File, Why]),
                    empty()
            end;
        {error, enoent} ->
            empty();
        {error, Why} ->
            ?LOG_WARNING("bc_gitops: cannot read state file ~ts: ~p", [File, Why]),
            empty()
    end.

%% @doc Writes `Stored' atomically.
-spec save(file:filename(), stored()) -> ok | {error, term()}.
save(File, Stored) ->
    Payload = term_to_binary({?FORMAT, Stored}),
    Bin = <<?MAGIC, (byte_size(Payload)):64, (erlang:crc32(Payload)):32, Payload/binary>>,
    Tmp = File ++ ".tmp",
    maybe_write(filelib:ensure_dir(File), Tmp, Bin, File).

-spec maybe_write(ok | {error, term()}, file:filename(), binary(), file:filename()) ->
    ok | {error, term()}.
maybe_write(ok, Tmp, Bin, File) ->
    case file:open(Tmp, [write, raw, binary]) of
        {ok, Fd} ->
            Written = file:write(Fd, Bin),
            Synced = file:sync(Fd),
            ok = file:close(Fd),
            case {Written, Synced} of
                {ok, ok} -> file:rename(Tmp, File);
                _ -> _ = file:delete(Tmp), {error, {write_failed, Written, Synced}}
            end;
        {error, _} = Error ->
            Error
    end;
maybe_write({error, _} = Error, _, _, _) ->
    Error.

-spec decode(binary()) -> {ok, stored()} | {error, term()}.
decode(<<?MAGIC, Size:64, Crc:32, Payload:Size/binary>>) ->
    case erlang:crc32(Payload) of
        Crc ->
            %% Not `safe': the atoms in it are app names and env values that
            %% passed validation when written, and may not exist yet after a
            %% restart. The file is ours; the checksum guards against tearing.
            try binary_to_term(Payload) of
                {?FORMAT, #{last_commit := _, apps := Apps} = Stored} when is_map(Apps) ->
                    {ok, Stored};
                _ ->
                    {error, unknown_format}
            catch
                error:badarg -> {error, undecodable}
            end;
        _ ->
            {error, checksum_mismatch}
    end;
decode(<<?MAGIC, _/binary>>) ->
    {error, truncated};
decode(_) ->
    {error, not_a_state_file}.

-spec empty() -> stored().
empty() -> #{last_commit => undefined, apps => #{}}.
