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
%%% starting. The history and the pins beside it ({@link bc_gitops_history},
%%% {@link bc_gitops_pins}) are written and read the same way, through
%%% {@link write/2} and {@link read/1}.
-module(bc_gitops_store).

-include_lib("kernel/include/logger.hrl").

-export([load/1, save/2, write/2, read/1]).

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
    case read(File) of
        {ok, #{last_commit := _, apps := Apps} = Stored} when is_map(Apps) ->
            Stored;
        {ok, _} ->
            ?LOG_WARNING("bc_gitops: ignoring state file ~ts: ~p", [File, unknown_format]),
            empty();
        none ->
            empty();
        {error, _} ->
            empty()
    end.

%% @doc Writes `Stored' atomically.
-spec save(file:filename(), stored()) -> ok | {error, term()}.
save(File, Stored) ->
    write(File, Stored).

%% @doc Writes any term to `File' atomically, framed with its length and a
%% CRC-32.
-spec write(file:filename(), term()) -> ok | {error, term()}.
write(File, Term) ->
    Payload = term_to_binary({?FORMAT, Term}),
    Bin = <<?MAGIC, (byte_size(Payload)):64, (erlang:crc32(Payload)):32, Payload/binary>>,
    Tmp = File ++ ".tmp",
    maybe_write(filelib:ensure_dir(File), Tmp, Bin, File).

%% @doc The term {@link write/2} wrote to `File'; `none' when there is no
%% file; `{error, Why}' (logged as a warning) when it cannot be trusted.
-spec read(file:filename()) -> {ok, term()} | none | {error, term()}.
read(File) ->
    Result = case file:read_file(File) of
                 {ok, Bin} -> decode(Bin);
                 {error, enoent} -> none;
                 {error, _} = Error -> Error
             end,
    case Result of
        {error, Why} -> ?LOG_WARNING("bc_gitops: ignoring ~ts: ~p", [File, Why]);
        _ -> ok
    end,
    Result.

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

-spec decode(binary()) -> {ok, term()} | {error, term()}.
decode(<<?MAGIC, Size:64, Crc:32, Payload:Size/binary>>) ->
    case erlang:crc32(Payload) of
        Crc ->
            %% Not `safe': the atoms in it are app names and env values that
            %% passed validation when written, and may not exist yet after a
            %% restart. The file is ours; the checksum guards against tearing.
            try binary_to_term(Payload) of
                {?FORMAT, Term} ->
                    {ok, Term};
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
