%%% @doc A minimal protobuf (proto2) wire-format codec and the message
%%% schemas of the hex registry (hexpm/specifications, `registry/signed.proto'
%%% and `registry/package.proto'), for the `hex' source type
%%% ({@link bc_gitops_hex}).
%%%
%%% Wire format: varints (wire type 0), 64-bit (1), length-delimited (2) and
%%% 32-bit (5) fields are read; groups (3, 4) are refused. Fields that a
%%% schema does not name are skipped, so newer registries (security
%%% advisories, field 6 of `Release') still decode.
%%%
%%% Messages are maps keyed by the field names below; a repeated field is a
%%% list (empty when absent); an absent optional field is absent from the
%%% map. Strings and bytes stay binaries: nothing read creates an atom.
%%% <ul>
%%% <li>`Signed': `payload' (1, bytes, required), `signature' (2, bytes).</li>
%%% <li>`Package': `releases' (1, repeated Release), `name' (2, string),
%%%     `repository' (3, string).</li>
%%% <li>`Release': `version' (1, string, required), `inner_checksum' (2,
%%%     bytes, required), `dependencies' (3, repeated Dependency), `retired'
%%%     (4, RetirementStatus), `outer_checksum' (5, bytes).</li>
%%% <li>`RetirementStatus': `reason' (1, enum as an integer), `message' (2,
%%%     string).</li>
%%% <li>`Dependency': `package' (1, string, required), `requirement' (2,
%%%     string, required), `optional' (3, bool), `app' (4, string),
%%%     `repository' (5, string).</li>
%%% </ul>
%%% Errors: `{bad_protobuf, Why}'.
-module(bc_gitops_protobuf).

-export([decode_signed/1, decode_package/1, encode_signed/1, encode_package/1,
         decode_fields/1]).

-export_type([message/0, wire_value/0]).

-type message() :: #{atom() => term()}.
-type wire_value() :: {varint, non_neg_integer()} | {fixed64, binary()}
                    | {bytes, binary()} | {fixed32, binary()}.

-type kind() :: string | bytes | bool | enum | {message, atom()}.
-type field() :: {pos_integer(), atom(), kind(), single | repeated | required}.

-define(MAX_VARINT_BYTES, 10).

%% @doc Decodes a `Signed' message.
-spec decode_signed(binary()) -> {ok, message()} | {error, {bad_protobuf, term()}}.
decode_signed(Bin) ->
    decode('Signed', Bin).

%% @doc Decodes a `Package' message.
-spec decode_package(binary()) -> {ok, message()} | {error, {bad_protobuf, term()}}.
decode_package(Bin) ->
    decode('Package', Bin).

%% @doc Encodes a `Signed' message.
-spec encode_signed(message()) -> binary().
encode_signed(Msg) ->
    encode('Signed', Msg).

%% @doc Encodes a `Package' message.
-spec encode_package(message()) -> binary().
encode_package(Msg) ->
    encode('Package', Msg).

%% @doc The raw fields of a message, in wire order, with no schema.
-spec decode_fields(binary()) ->
          {ok, [{pos_integer(), wire_value()}]} | {error, {bad_protobuf, term()}}.
decode_fields(Bin) ->
    try
        {ok, fields(Bin, [])}
    catch
        throw:{?MODULE, Why} -> {error, {bad_protobuf, Why}}
    end.

%%====================================================================
%% Schemas
%%====================================================================

-spec schema(atom()) -> [field()].
schema('Signed') ->
    [{1, payload, bytes, required},
     {2, signature, bytes, single}];
schema('Package') ->
    [{1, releases, {message, 'Release'}, repeated},
     {2, name, string, single},
     {3, repository, string, single}];
schema('Release') ->
    [{1, version, string, required},
     {2, inner_checksum, bytes, required},
     {3, dependencies, {message, 'Dependency'}, repeated},
     {4, retired, {message, 'RetirementStatus'}, single},
     {5, outer_checksum, bytes, single}];
schema('RetirementStatus') ->
    [{1, reason, enum, required},
     {2, message, string, single}];
schema('Dependency') ->
    [{1, package, string, required},
     {2, requirement, string, required},
     {3, optional, bool, single},
     {4, app, string, single},
     {5, repository, string, single}].

%%====================================================================
%% Decoding
%%====================================================================

-spec fail(term()) -> no_return().
fail(Why) ->
    throw({?MODULE, Why}).

-spec decode(atom(), binary()) -> {ok, message()} | {error, {bad_protobuf, term()}}.
decode(Name, Bin) when is_binary(Bin) ->
    try
        {ok, message(Name, Bin)}
    catch
        throw:{?MODULE, Why} -> {error, {bad_protobuf, Why}}
    end;
decode(_Name, _Bin) ->
    {error, {bad_protobuf, not_binary}}.

-spec message(atom(), binary()) -> message().
message(Name, Bin) ->
    Schema = schema(Name),
    Empty = maps:from_list([{F, []} || {_, F, _, repeated} <- Schema]),
    Msg0 = lists:foldl(fun({No, Value}, Acc) -> field(Name, Schema, No, Value, Acc) end,
                       Empty, fields(Bin, [])),
    Msg = maps:map(fun(F, V) ->
                           case lists:keyfind(F, 2, Schema) of
                               {_, _, _, repeated} -> lists:reverse(V);
                               _ -> V
                           end
                   end, Msg0),
    lists:foreach(fun({_, F, _, required}) ->
                          maps:is_key(F, Msg) orelse fail({missing_field, Name, F});
                     (_) ->
                          ok
                  end, Schema),
    Msg.

-spec field(atom(), [field()], pos_integer(), wire_value(), message()) -> message().
field(Name, Schema, No, Value, Acc) ->
    case lists:keyfind(No, 1, Schema) of
        false ->
            Acc;
        {_, F, Kind, repeated} ->
            Acc#{F := [value(Name, F, Kind, Value) | maps:get(F, Acc)]};
        {_, F, Kind, _} ->
            %% proto2: the last occurrence of a singular field wins.
            Acc#{F => value(Name, F, Kind, Value)}
    end.

-spec value(atom(), atom(), kind(), wire_value()) -> term().
value(_, _, bytes, {bytes, B}) ->
    B;
value(Name, F, string, {bytes, B}) ->
    case unicode:characters_to_binary(B) of
        B -> B;
        _ -> fail({bad_utf8, Name, F})
    end;
value(_, _, bool, {varint, N}) ->
    N =/= 0;
value(_, _, enum, {varint, N}) ->
    N;
value(_, _, {message, Sub}, {bytes, B}) ->
    message(Sub, B);
value(Name, F, _Kind, _Value) ->
    fail({wrong_wire_type, Name, F}).

-spec fields(binary(), [{pos_integer(), wire_value()}]) -> [{pos_integer(), wire_value()}].
fields(<<>>, Acc) ->
    lists:reverse(Acc);
fields(Bin, Acc) ->
    {Key, Rest} = varint(Bin),
    No = Key bsr 3,
    No > 0 orelse fail({bad_field_number, 0}),
    case Key band 7 of
        0 ->
            {N, Rest1} = varint(Rest),
            fields(Rest1, [{No, {varint, N}} | Acc]);
        1 ->
            case Rest of
                <<V:8/binary, Rest1/binary>> -> fields(Rest1, [{No, {fixed64, V}} | Acc]);
                _ -> fail(truncated)
            end;
        2 ->
            {Len, Rest1} = varint(Rest),
            case Rest1 of
                <<V:Len/binary, Rest2/binary>> -> fields(Rest2, [{No, {bytes, V}} | Acc]);
                _ -> fail(truncated)
            end;
        5 ->
            case Rest of
                <<V:4/binary, Rest1/binary>> -> fields(Rest1, [{No, {fixed32, V}} | Acc]);
                _ -> fail(truncated)
            end;
        Type ->
            fail({unsupported_wire_type, Type})
    end.

-spec varint(binary()) -> {non_neg_integer(), binary()}.
varint(Bin) ->
    varint(Bin, 0, 0, 0).

-spec varint(binary(), non_neg_integer(), non_neg_integer(), non_neg_integer()) ->
          {non_neg_integer(), binary()}.
varint(_Bin, _Shift, _Acc, ?MAX_VARINT_BYTES) ->
    fail(varint_too_long);
varint(<<0:1, B:7, Rest/binary>>, Shift, Acc, _N) ->
    {Acc bor (B bsl Shift), Rest};
varint(<<1:1, B:7, Rest/binary>>, Shift, Acc, N) ->
    varint(Rest, Shift + 7, Acc bor (B bsl Shift), N + 1);
varint(<<>>, _Shift, _Acc, _N) ->
    fail(truncated).

%%====================================================================
%% Encoding
%%====================================================================

-spec encode(atom(), message()) -> binary().
encode(Name, Msg) ->
    iolist_to_binary(
      [encode_field(No, Kind, V)
       || {No, F, Kind, Card} <- schema(Name),
          V <- case {Card, Msg} of
                   {repeated, #{F := L}} -> L;
                   {_, #{F := X}} -> [X];
                   _ -> []
               end]).

-spec encode_field(pos_integer(), kind(), term()) -> iodata().
encode_field(No, bool, V) ->
    [enc_varint(No bsl 3), enc_varint(case V of true -> 1; false -> 0 end)];
encode_field(No, enum, V) ->
    [enc_varint(No bsl 3), enc_varint(V)];
encode_field(No, {message, Sub}, V) ->
    len_delim(No, encode(Sub, V));
encode_field(No, _StringOrBytes, V) when is_binary(V) ->
    len_delim(No, V).

-spec len_delim(pos_integer(), binary()) -> iodata().
len_delim(No, Bin) ->
    [enc_varint((No bsl 3) bor 2), enc_varint(byte_size(Bin)), Bin].

-spec enc_varint(non_neg_integer()) -> binary().
enc_varint(N) when N < 128 ->
    <<N>>;
enc_varint(N) ->
    <<1:1, (N band 127):7, (enc_varint(N bsr 7))/binary>>.
